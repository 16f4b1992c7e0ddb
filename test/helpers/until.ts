/**
 * Polls `condition` every 5 ms until it holds, or throws after `timeoutMs` naming `what`: for state
 * that another socket or process changes, where no event says when.
 */
export async function until (condition: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
