/**
 * The live view's tables (fleet mode), migration 2 of `core/postgres/migrations.ts`. Each live call's
 * stored events (`call.started`, turns, `call.ended`) and its row for `/live/calls`, until the call
 * ends plus a grace; then any replica can list live calls and resume a viewer.
 */
export const LIVE_VIEW_MIGRATION = `
CREATE TABLE IF NOT EXISTS live_calls (
  call_sid   text PRIMARY KEY,
  stream_sid text NOT NULL,
  segment    integer NOT NULL,
  started_at text NOT NULL,
  turn_count integer NOT NULL DEFAULT 0,
  last_role  text,
  seen_at    timestamptz NOT NULL DEFAULT now(),
  ended_at   timestamptz
);
CREATE TABLE IF NOT EXISTS live_events (
  call_sid   text NOT NULL,
  segment    integer NOT NULL,
  sequence   integer NOT NULL,
  stream_sid text NOT NULL,
  type       text NOT NULL,
  body       text NOT NULL,
  PRIMARY KEY (call_sid, segment, sequence)
);
`
