#!/bin/sh
# ACME DNS-01 challenges served by dnsmaster: a hook for dehydrated (HOOK=...).
#
#   deploy_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE [DOMAIN TOKEN_FILENAME TOKEN_VALUE]...
#       adds  '_acme-challenge.DOMAIN:TOKEN_VALUE:TTL  to  ZONES/zones.acme-DOMAIN,
#       then  dnsmaster push --wait : returns once every slave's tinydns serves it.
#   clean_challenge  DOMAIN TOKEN_FILENAME TOKEN_VALUE [...]
#       removes that line (and the file once it holds no record), then pushes.
#   any other hook name: ignored (exit 0).
#
# Environment (put it in dehydrated's config, which is sourced: export VAR=...):
#   DNSMASTER_CONFIG   dnsmaster's configuration (its zones directory is used)
#   DNSMASTER_ZONES    the zones directory, if it should not be read from the config
#   DNSMASTER          the dnsmaster command (default: dnsmaster)
#   DNSMASTER_TIMEOUT  seconds to wait for every slave (default: 120)
#   DNSMASTER_TTL      the TXT record's TTL (default: 60)
#
# Run it as a user that may write the zones directory. If the dnsmaster daemon runs,
# it sees the file itself; "dnsmaster push" then hands off to it and waits all the same.
set -eu

DNSMASTER=${DNSMASTER:-dnsmaster}
DNSMASTER_TIMEOUT=${DNSMASTER_TIMEOUT:-120}
DNSMASTER_TTL=${DNSMASTER_TTL:-60}

die() {
    printf 'dnsmaster-acme: %s\n' "$*" >&2
    exit 1
}

zones_dir() {
    if [ -n "${DNSMASTER_ZONES:-}" ]; then
        printf '%s\n' "$DNSMASTER_ZONES"
        return
    fi
    [ -n "${DNSMASTER_CONFIG:-}" ] || die "set DNSMASTER_CONFIG (or DNSMASTER_ZONES)"
    # The config's "zones" key; a relative path is relative to the config's directory.
    python3 - "$DNSMASTER_CONFIG" <<'EOF'
import os, sys, tomllib
path = sys.argv[1]
with open(path, "rb") as f:
    zones = tomllib.load(f).get("zones") or sys.exit(f"{path}: no zones key")
print(os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(zones)))
EOF
}

# The TXT text as a tinydns-data field: ACME values (base64url) are written as they
# are; anything else is written byte by byte as \ooo, so ':' '\' and control bytes
# cannot split or end the line.
txt_field() {
    case $1 in
    *[!A-Za-z0-9_.=+/-]*) printf '%s' "$1" | od -An -v -to1 | tr -s ' \n' '\n\n' |
        while read -r byte; do [ -z "$byte" ] || printf '\\%s' "$byte"; done ;;
    *) printf '%s' "$1" ;;
    esac
}

domain_of() {
    domain=$(printf '%s' "$1" | tr 'A-Z' 'a-z')
    domain=${domain%.}
    case $domain in
    '' | .* | *..* | *[!a-z0-9.-]*) die "$1: not a domain name this hook writes" ;;
    esac
    printf '%s\n' "$domain"
}

# Replace FILE by the output of the command that follows, atomically (a temp file
# in the same directory, renamed); an output without a record removes FILE.
rewrite() {
    file=$1
    shift
    tmp=$(dirname "$file")/.acme-tmp.$$
    "$@" >"$tmp" || { rm -f "$tmp"; die "cannot write $tmp"; }
    if grep -qv '^#' "$tmp"; then
        chmod 0644 "$tmp"
        mv -f "$tmp" "$file"
    else
        rm -f "$tmp" "$file"
    fi
}

with_line() {
    if [ -f "$1" ]; then grep -vFx -- "$2" "$1" || :; else printf '# ACME DNS-01 challenges, written by %s\n' "$0"; fi
    printf '%s\n' "$2"
}

without_line() {
    [ ! -f "$1" ] || grep -vFx -- "$2" "$1" || :
}

push() {
    # shellcheck disable=SC2086
    "$DNSMASTER" push "$@" ${DNSMASTER_CONFIG:+--config "$DNSMASTER_CONFIG"}
}

hook=${1:-}
[ $# -eq 0 ] || shift
case $hook in
deploy_challenge | clean_challenge) ;;
*) exit 0 ;;
esac
zones=$(zones_dir) || exit 1
[ -d "$zones" ] || die "$zones: no such zones directory"
while [ $# -ge 3 ]; do
    domain=$(domain_of "$1") || exit 1
    line="'_acme-challenge.$domain:$(txt_field "$3"):$DNSMASTER_TTL"
    if [ "$hook" = deploy_challenge ]; then
        rewrite "$zones/zones.acme-$domain" with_line "$zones/zones.acme-$domain" "$line"
    else
        rewrite "$zones/zones.acme-$domain" without_line "$zones/zones.acme-$domain" "$line"
    fi
    shift 3
done
if [ "$hook" = deploy_challenge ]; then
    push --wait --timeout "$DNSMASTER_TIMEOUT"
else
    push
fi
