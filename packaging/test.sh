#!/usr/bin/env bash
# Checks the packages packaging/build.sh made, as root on Debian: the .deb's control data and
# files; `dpkg -i` (files, conffile, user, state dir); the installed binary with the packaged
# config (`outpost check`, then a start on 127.0.0.1 with mDNS off and a temporary data dir);
# systemd-analyze on the installed unit; an upgrade that keeps data and a changed conffile;
# remove (data kept), purge (state, config and user gone); and the .rpm's file list.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "packaging/test.sh installs packages: run it as root" >&2; exit 1; }
command -v rpm >/dev/null || { apt-get update -qq && apt-get install -y -qq rpm >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

deb=$(ls -t target/debian/outpost_*.deb | head -1)
rpmfile=$(ls -t target/generate-rpm/outpost-*.rpm | head -1)
work=$(mktemp -d)
chmod 755 "$work"   # the outpost user reads the test config in it
trap 'dpkg --purge outpost >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
fail() { echo "packaging test FAILED: $*" >&2; exit 1; }
step() { echo "--- $*"; }

step "contents of $deb"
dpkg-deb -I "$deb"
dpkg-deb -c "$deb" | tee "$work/contents"
for path in ./usr/bin/outpost ./usr/lib/systemd/system/outpost.service \
    ./usr/lib/systemd/system/outpost.socket ./etc/outpost/outpost.toml \
    ./usr/share/doc/outpost/README.md ./usr/share/doc/outpost/CHANGELOG.md \
    ./usr/share/doc/outpost/docs/operating.md ./usr/share/doc/outpost/outpost.toml.example; do
  grep -q " $path\$" "$work/contents" || fail "$path is not in the package"
done
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/outpost/outpost.toml "$work/control/conffiles" || fail "the config is not a conffile"
depends=$(dpkg-deb -f "$deb" Depends)
echo "$depends" | grep -q 'libc6' || fail "Depends is not computed from the binary: $depends"
dpkg-deb -f "$deb" Suggests | grep -q espeak-ng || fail "espeak-ng is not suggested"

step "install"
dpkg --purge outpost >/dev/null 2>&1 || true
dpkg -i "$deb"
getent passwd outpost >/dev/null || fail "no outpost user"
[ "$(stat -c '%U %a' /var/lib/outpost)" = "outpost 700" ] || fail "/var/lib/outpost is not outpost's, 0700"
[ "$(stat -c '%U:%G %a' /etc/outpost/outpost.toml)" = "root:outpost 640" ] || fail "config ownership"
dpkg-query -W -f='${Conffiles}\n' outpost | grep -q /etc/outpost/outpost.toml || fail "conffile not registered"
/usr/bin/outpost --version

step "the installed binary with the packaged config"
runuser -u outpost -- /usr/bin/outpost check --config /etc/outpost/outpost.toml
sed 's/^mdns = true/mdns = false/' /etc/outpost/outpost.toml > "$work/outpost.toml"
mkdir -m 0700 "$work/data" && chown outpost:outpost "$work/data" "$work/outpost.toml"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18443)
# setpriv execs (runuser would stay as a parent and swallow the signal).
setpriv --reuid=outpost --regid=outpost --init-groups /usr/bin/outpost serve --config "$work/outpost.toml" \
  --listen "127.0.0.1:$port" --data-dir "$work/data" 2>"$work/serve.log" &
daemon=$!
for _ in $(seq 1 100); do
  curl -sk "https://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.2
done
curl -skf "https://127.0.0.1:$port/healthz" || { cat "$work/serve.log"; fail "the installed daemon did not answer over TLS"; }
echo
kill -TERM "$daemon"; wait "$daemon" || fail "the daemon did not stop cleanly"
grep -q "TLS certificate loaded" "$work/serve.log" || fail "no TLS"

step "systemd-analyze on the installed unit"
systemd-analyze verify /usr/lib/systemd/system/outpost.service /usr/lib/systemd/system/outpost.socket
systemd-analyze security --offline=true /usr/lib/systemd/system/outpost.service | tail -1

step "upgrade keeps the data and a changed configuration"
echo "kept" > /var/lib/outpost/marker
echo "# changed by the admin" >> /etc/outpost/outpost.toml
version=$(dpkg-deb -f "$deb" Version)
cargo deb --no-build --no-strip --deb-version "$version+upgrade" --output "$work/upgrade.deb" >/dev/null
dpkg -i "$work/upgrade.deb"
[ "$(dpkg-query -W -f='${Version}' outpost)" = "$version+upgrade" ] || fail "not upgraded"
grep -q kept /var/lib/outpost/marker || fail "an upgrade lost the data"
grep -q "changed by the admin" /etc/outpost/outpost.toml || fail "an upgrade replaced the changed config"

step "remove keeps the data; purge deletes it"
dpkg -r outpost
[ ! -e /usr/bin/outpost ] || fail "the binary is still there after remove"
grep -q kept /var/lib/outpost/marker || fail "remove deleted the data"
dpkg --purge outpost
[ ! -e /var/lib/outpost ] || fail "purge left /var/lib/outpost"
[ ! -e /etc/outpost ] || fail "purge left /etc/outpost"
! getent passwd outpost >/dev/null || fail "purge left the outpost user"

step "contents of $rpmfile"
rpm -qip "$rpmfile"
rpm -qlp "$rpmfile" | tee "$work/rpm-files"
for path in /usr/bin/outpost /usr/lib/systemd/system/outpost.service /etc/outpost/outpost.toml; do
  grep -qx "$path" "$work/rpm-files" || fail "$path is not in the rpm"
done
rpm -qp --configfiles "$rpmfile" | grep -qx /etc/outpost/outpost.toml || fail "rpm config file"
rpm -qp --scripts "$rpmfile" | grep -q useradd || fail "the rpm does not create the user"
rpm -qp --suggests "$rpmfile" | grep -q espeak-ng || fail "the rpm does not suggest espeak-ng"
rpm -qp --requires "$rpmfile" | grep -q 'libc.so.6' || fail "rpm requires are not computed"

echo "packaging: all checks passed"
