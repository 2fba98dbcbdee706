# Outpost .rpm: after an upgrade the new binary takes over. An erase keeps /var/lib/outpost
# (RPM has no purge): delete it by hand to drop the data.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart outpost.service >/dev/null 2>&1 || :
    fi
fi
exit 0
