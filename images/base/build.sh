#!/usr/bin/env bash
# Builds the local Debian base image from Debian's packages (no image registry involved):
# debootstrap --variant=minbase into a temporary folder, a few apt settings for images, then
# `docker import`. Usage: images/base/build.sh IMAGE_TAG. Environment: PVEKVM_DEBIAN_SUITE
# (bookworm), PVEKVM_DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail
tag=$1
suite=${PVEKVM_DEBIAN_SUITE:-bookworm}
mirror=${PVEKVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/pvekvm-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
SOURCES
# Images never start services from package scripts, keep no recommends, docs or apt caches.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$root/etc/apt/apt.conf.d/90pvekvm-no-recommends"
printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
  >"$root/etc/dpkg/dpkg.cfg.d/90pvekvm-nodoc"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive' -c 'CMD ["/bin/bash"]' - "$tag" >/dev/null
