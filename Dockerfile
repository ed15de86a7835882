# syntax=docker/dockerfile:1
#
# The image holds weft's compiled server, client, protocol, persistence and cluster code, the
# production dependencies and the HTTP API description; no sources, tests or benchmarks
# (.dockerignore keeps test/ and bench/ out of the build context, and the runtime stage copies
# the package.json "files" list only). test/deployment-files-image.test.ts runs these steps
# without a Docker engine.

# ---- build: compile TypeScript ----
FROM node:24-bookworm-slim AS build
WORKDIR /src

COPY package.json package-lock.json ./
# npm ci runs the package's `prepare`, which builds only once the sources are there.
COPY scripts/prepare.mjs scripts/
RUN npm ci --no-audit --no-fund

COPY . .
# .git is not in the build context (.dockerignore), so the commit comes in as an argument:
#   docker build --build-arg WEFT_BUILD_COMMIT=$(git rev-parse HEAD) .
# An empty WEFT_BUILD_TIME means "now".
ARG WEFT_BUILD_COMMIT=""
ARG WEFT_BUILD_TIME=""
RUN WEFT_BUILD_COMMIT="$WEFT_BUILD_COMMIT" WEFT_BUILD_TIME="$WEFT_BUILD_TIME" npm run build

# ---- production dependencies only ----
# classic-level (LevelDB) ships prebuilt binaries in its npm package: no compiler needed.
FROM node:24-bookworm-slim AS deps
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts/prepare.mjs scripts/
RUN npm ci --omit=dev --no-audit --no-fund

# ---- runtime ----
FROM node:24-bookworm-slim AS runtime
ARG WEFT_BUILD_COMMIT=""
ARG WEFT_BUILD_TIME=""
# Keep in step with package.json "version" (a test checks).
ARG WEFT_VERSION=0.1.0
LABEL org.opencontainers.image.title="weft" \
      org.opencontainers.image.description="Real-time backend for collaborative Yjs editors: y-websocket and Hocuspocus protocols, LevelDB persistence, Redis relay" \
      org.opencontainers.image.version="$WEFT_VERSION" \
      org.opencontainers.image.revision="$WEFT_BUILD_COMMIT" \
      org.opencontainers.image.created="$WEFT_BUILD_TIME" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.documentation="README.md, Operations"
ENV NODE_ENV=production
WORKDIR /app

COPY package.json ./package.json
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist/server ./dist/server
COPY --from=build /src/dist/client ./dist/client
COPY --from=build /src/dist/protocol ./dist/protocol
COPY --from=build /src/dist/crdt ./dist/crdt
COPY --from=build /src/dist/cluster ./dist/cluster
COPY --from=build /src/dist/persistence ./dist/persistence
COPY --from=build /src/dist/demo ./dist/demo
COPY --from=build /src/dist/build-info.json ./dist/build-info.json
COPY docs/openapi.yaml ./docs/openapi.yaml
COPY deploy/docker/healthcheck.mjs ./healthcheck.mjs

# The volume directory must exist and belong to the runtime user before VOLUME is declared;
# changes after the declaration are discarded.
RUN mkdir -p /data && chown node:node /data
VOLUME /data

ENV WEFT_DATA=/data WEFT_PORT=1234 WEFT_HOST=0.0.0.0
EXPOSE 1234

USER node

# /health/ready over http, or https when WEFT_TLS_CERT is set (healthcheck.mjs; the slim image
# has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "healthcheck.mjs"]

# SIGTERM starts the graceful drain (readiness 503, flush, close 1012, exit 0). The drain
# window is --drain-seconds (20 s by default): give `docker stop` more, e.g. --stop-timeout 30.
STOPSIGNAL SIGTERM
CMD ["node", "dist/server/cli.js", "serve"]
