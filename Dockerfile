# syntax=docker/dockerfile:1
# medstream: Node 24 runs the TypeScript sources directly (type stripping), so there is no build step;
# the first stage only installs the production dependencies. See README "Deployment".

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev leaves out the `node` devDependency (the Node binary npm scripts use) and the test tools:
# the image runs on its own Node 24. test/deploy/image.test.ts runs these steps outside Docker.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-slim AS runtime
ENV NODE_ENV=production \
    PORT=8080 \
    METRICS_PORT=9464 \
    DATA_DIR=/data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY src ./src
COPY scripts/healthcheck.ts scripts/webhooks.ts scripts/webhook-receiver.ts scripts/viewer-token.ts ./scripts/
# The outbox (outbox.db) and the file sink live in DATA_DIR: mount a volume there so pending webhook
# events outlive the container. Owned by the unprivileged `node` user (uid 1000) of the base image.
RUN mkdir -p /data && chown 1000:1000 /data
VOLUME ["/data"]
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# PORT is the public HTTP + WebSocket listener; METRICS_PORT is for Prometheus on the internal network only.
EXPOSE 8080 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["node", "scripts/healthcheck.ts"]
# node itself is PID 1 (or tini's child with `init: true`), so SIGTERM reaches the drain handler;
# `npm start` would sit in between and swallow it.
STOPSIGNAL SIGTERM
# --max-semi-space-size=4 (MiB): the media path allocates small short-lived objects at a high rate,
# and V8 otherwise grows the young generation to tens of MiB (about 1.1 MiB RSS per call). Of 1, 2,
# 4 and 8 MiB, 4 had the lowest RSS per call and CPU within noise of the lowest (README, Benchmark).
# Same command as `npm start`.
CMD ["node", "--max-semi-space-size=4", "src/server.ts"]
