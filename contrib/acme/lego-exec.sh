#!/bin/sh
# ACME DNS-01 challenges served by dnsmaster: a script for lego's exec provider
# (lego --dns exec, EXEC_PATH=/path/to/lego-exec.sh, default mode, not RAW).
#
#   present FQDN VALUE    (FQDN is _acme-challenge.DOMAIN.)  add the TXT record, push, wait
#   cleanup FQDN VALUE    remove it, push
#   anything else: ignored (exit 0)
#
# It is dehydrated-hook.sh (beside it) under lego's names; the same environment
# applies: DNSMASTER_CONFIG or DNSMASTER_ZONES, DNSMASTER, DNSMASTER_TIMEOUT,
# DNSMASTER_TTL.
set -eu

hook=$(dirname "$0")/dehydrated-hook.sh
[ $# -eq 3 ] || exit 0
domain=${2%.}
case $domain in
_acme-challenge.*) domain=${domain#_acme-challenge.} ;;
*)
    printf 'dnsmaster-acme: %s: not an _acme-challenge name\n' "$2" >&2
    exit 1
    ;;
esac
case $1 in
present) exec "$hook" deploy_challenge "$domain" - "$3" ;;
cleanup) exec "$hook" clean_challenge "$domain" - "$3" ;;
*) exit 0 ;;
esac
