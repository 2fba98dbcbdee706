# Outpost .rpm: on erase (not upgrade), stop and disable the service and its socket.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now outpost.service outpost.socket >/dev/null 2>&1 || :
fi
exit 0
