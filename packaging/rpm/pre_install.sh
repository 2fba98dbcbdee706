# Outpost .rpm: the outpost system user, before the files that name it are installed.
getent group outpost >/dev/null || groupadd --system outpost
getent passwd outpost >/dev/null || useradd --system --gid outpost --home-dir /var/lib/outpost \
    --no-create-home --shell /sbin/nologin --comment "Outpost" outpost
exit 0
