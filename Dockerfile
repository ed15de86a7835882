# syntax=docker/dockerfile:1

# ---- build: compile TypeScript, then keep only production dependencies ----
FROM node:20-bookworm-slim AS build
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
RUN WEFT_BUILD_COMMIT="$WEFT_BUILD_COMMIT" WEFT_BUILD_TIME="$WEFT_BUILD_TIME" npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ----
# classic-level (LevelDB) ships prebuilt binaries in its npm package: no compiler needed here.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app

COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist

# The volume directory must exist and belong to the runtime user before VOLUME is declared;
# changes after the declaration are discarded.
RUN mkdir -p /data && chown node:node /data
VOLUME /data

ENV WEFT_DATA=/data WEFT_PORT=1234 WEFT_HOST=0.0.0.0
EXPOSE 1234

USER node

# The slim image has no curl; Node 20 has fetch.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.WEFT_PORT||1234)+'/health/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# SIGTERM starts the graceful drain (readiness 503, flush, close 1012, exit 0). The drain
# window is --drain-seconds (20 s by default): give `docker stop` more, e.g. --stop-timeout 30.
STOPSIGNAL SIGTERM
CMD ["node", "dist/server/cli.js", "serve"]
