#!/bin/sh
# The seed's decode.sh on kvtier: one decode DP rank (see engine.sh).
exec "$(dirname "$0")/engine.sh" decode "$@"
