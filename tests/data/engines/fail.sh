#!/bin/sh
# Fails before saying anything, with the reason on stderr.
printf 'fatal: no model configured\n' >&2
exit 3
