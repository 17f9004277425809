# Sourced by the build stage's RUN steps before pip runs (POSIX sh).
# A CA bundle passed as a BuildKit secret (--secret id=ca,src=...) is trusted by pip, for TLS-inspecting proxies;
# a secret is mounted for one RUN only and never lands in a layer.
if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi
# Build arguments are environment variables inside RUN, and pip rejects an empty PIP_INDEX_URL or PIP_NO_INDEX:
# a blank `--build-arg PIP_INDEX_URL=` means "not set".
[ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL
[ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL
[ -n "${PIP_NO_INDEX:-}" ] || unset PIP_NO_INDEX
[ -n "${PIP_TRUSTED_HOST:-}" ] || unset PIP_TRUSTED_HOST
