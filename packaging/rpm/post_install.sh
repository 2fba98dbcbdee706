# Outpost .rpm: the state directory, then enable and start on first install (where systemd
# runs); an upgrade restarts it in post_uninstall.
install -d -m 0700 -o outpost -g outpost /var/lib/outpost
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now outpost.service >/dev/null 2>&1 || :
    fi
fi
exit 0
