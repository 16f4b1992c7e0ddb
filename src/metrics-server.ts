import { createServer } from 'node:http'
import type { Server } from 'node:http'
import type { Registry } from 'prom-client'

/**
 * `GET /metrics` on its own listener (METRICS_PORT), so the public port never exposes it.
 */
export function createMetricsServer (registry: Registry): Server {
  return createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0]
    if (request.method !== 'GET' || path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      return
    }
    registry.metrics().then((text) => {
      response.writeHead(200, { 'content-type': registry.contentType }).end(text)
    }, () => {
      response.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n')
    })
  })
}
