# kata-pulse container image: the statically linked agent and nothing else.
#
# The binary is built outside (no registry is needed for the build):
#   scripts/build-image.sh            # builds it, checks it is static, then this file
# or by hand:
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --target x86_64-unknown-linux-gnu -p kata-pulse
#   buildah bud -t kata-pulse:0.1.0 \
#     --build-arg KATA_PULSE_BIN=target/x86_64-unknown-linux-gnu/release/kata-pulse .
#
# Runs as uid 0, on purpose: the Kata shim sockets are root-owned (0600, in
# 0700 folders) and the CRI socket is root 0660, so only their owner can
# connect. uid 0 is not privilege by itself: run the container with every
# capability dropped, no privilege escalation and a read-only root file
# system, as the Helm chart does (see charts/kata-pulse/README.md, Security).
FROM scratch

# Path of the static binary inside the build context.
ARG KATA_PULSE_BIN=kata-pulse
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="kata-pulse" \
      org.opencontainers.image.description="Node agent for Kata Containers: sandbox discovery, CRI labels, shim and cAdvisor-compatible metrics" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY ${KATA_PULSE_BIN} /usr/local/bin/kata-pulse

USER 0:0
# The agent's default listen address is 127.0.0.1:8090; in a pod pass
# --listen-address=0.0.0.0:8090 (the chart does).
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/kata-pulse"]
