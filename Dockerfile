# relay's container image: the static relay binary and nothing else that it
# does not need. No shell, no package manager, no base image to pull.
#
# Build it with `make image` (IMAGE=relay:dev by default). That runs
# scripts/build-image.sh, which stages the build context in bin/image:
#   relay                  built with CGO_ENABLED=0 (a static binary; the time
#                          zone database is compiled in via time/tzdata)
#   ca-certificates.crt    the host's CA bundle, for HTTPS deliveries
#                          (Debian: /etc/ssl/certs/ca-certificates.crt)
#   passwd, group          one unprivileged user, relay (65532)
# and then `podman build -f Dockerfile bin/image` (or docker build).
#
# Run it next to PostgreSQL, e.g.
#   podman run -e RELAY_DATABASE_URL=postgres://relay:...@db:5432/app \
#     -e RELAY_ADMIN_ADDR=0.0.0.0:8080 -e RELAY_ADMIN_TOKEN=... relay:dev
# The entry point is `relay run`: arguments are its flags. Other commands:
#   podman run --entrypoint /relay relay:dev version
FROM scratch

COPY passwd group /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY relay /relay

# An unprivileged user by number, so that Kubernetes' runAsNonRoot can
# check it without reading /etc/passwd.
USER 65532:65532

# The admin API, /healthz, /readyz and /metrics (RELAY_ADMIN_ADDR; the
# default 127.0.0.1:8080 is reachable only from inside the pod or with
# --network host: set 0.0.0.0:8080 and a token to expose it).
EXPOSE 8080

ENTRYPOINT ["/relay", "run"]
