/** The two audio tracks of a Twilio call: `inbound` is the caller, `outbound` what the caller hears. */
export const TRACKS = ['inbound', 'outbound'] as const
export type Track = typeof TRACKS[number]

/** Who spoke a turn, decided from the two tracks' energy (docs/interface.md, "Turns"). */
export const ROLES = ['customer', 'agent', 'unknown'] as const
export type Role = typeof ROLES[number]
