#!/bin/sh
# The seed's prefill.sh on kvtier: one prefill DP rank (see engine.sh).
exec "$(dirname "$0")/engine.sh" prefill "$@"
