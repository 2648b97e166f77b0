#!/bin/sh
# Build the lab's signed apt repository of stand-in packages.
#
#   tests/lab/build-repo.sh OUTDIR
#
# Why: the shipped workflows install `gitlab-runner` from a package repository
# added with `apt_repo` (deb822 source + signing key) and Docker from a
# package list. In the lab, that repository is this one: every package under
# tests/lab/packages/ built with dpkg-deb, indexed with apt-ftparchive (from
# apt-utils; dpkg-scanpackages from dpkg-dev is the fallback) and signed with
# a key generated here in a throwaway GNUPGHOME, so apt checks `Signed-By`
# for real. The private key is deleted when the script ends.
#
# OUTDIR afterwards:
#   pool/main/*.deb
#   dists/lab/main/binary-ARCH/Packages(.gz)   ARCH = this machine's (dpkg --print-architecture)
#   dists/lab/{Release,Release.gpg,InRelease}
#   flowrun-lab.asc   the public key, ASCII-armored (the `key_url` of the lab's apt_repo)
#   flowrun-lab.gpg   the same key, binary (for apt's Signed-By or gpgv)
#
# Serve OUTDIR over loopback HTTP (or use it as file://OUTDIR) with suite
# `lab` and component `main`. Needs: dpkg-deb, gpg, and apt-ftparchive or
# dpkg-scanpackages. Exit status is non-zero on any failure.

set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
packages="$here/packages"
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in dpkg-deb gpg; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-repo: \`$tool\` is required" >&2; exit 1; }
done
if ! command -v apt-ftparchive >/dev/null 2>&1 && ! command -v dpkg-scanpackages >/dev/null 2>&1; then
    echo "build-repo: \`apt-ftparchive\` (apt-utils) or \`dpkg-scanpackages\` (dpkg-dev) is required" >&2
    exit 1
fi

arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

rm -rf "$out/pool" "$out/dists"
mkdir -p "$out/pool/main" "$out/dists/lab/main/binary-$arch"

# 1. Packages: copy each tree, fix modes (git keeps only the executable bit), build.
for src in "$packages"/*/; do
    name=$(basename "$src")
    [ -f "$src/DEBIAN/control" ] || continue
    stage="$work/$name"
    cp -R "$src" "$stage"
    find "$stage" -type d -exec chmod 0755 {} +
    find "$stage" -type f -exec chmod 0644 {} +
    for f in "$stage"/DEBIAN/postinst "$stage"/DEBIAN/prerm "$stage"/DEBIAN/postrm \
        "$stage"/usr/bin/* "$stage"/etc/init.d/*; do
        [ -f "$f" ] && chmod 0755 "$f"
    done
    version=$(sed -n 's/^Version: *//p' "$stage/DEBIAN/control")
    dpkg-deb --root-owner-group -Zgzip --build "$stage" "$out/pool/main/${name}_${version}_all.deb" >/dev/null
done

# 2. Index. Paths in Packages are relative to OUTDIR, as apt expects.
cd "$out"
if command -v apt-ftparchive >/dev/null 2>&1; then
    apt-ftparchive packages pool/main >"dists/lab/main/binary-$arch/Packages"
else
    dpkg-scanpackages --multiversion pool/main /dev/null >"dists/lab/main/binary-$arch/Packages" 2>/dev/null
fi
gzip -9nk "dists/lab/main/binary-$arch/Packages"

release_header() {
    cat <<EOF
Origin: flowrun lab
Label: flowrun lab stand-ins
Suite: lab
Codename: lab
Architectures: $arch
Components: main
Description: flowrun lab stand-in packages (not the real software)
Date: $(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S UTC')
EOF
}

if command -v apt-ftparchive >/dev/null 2>&1; then
    (
        cd dists/lab
        apt-ftparchive \
            -o APT::FTPArchive::Release::Origin="flowrun lab" \
            -o APT::FTPArchive::Release::Label="flowrun lab stand-ins" \
            -o APT::FTPArchive::Release::Suite=lab \
            -o APT::FTPArchive::Release::Codename=lab \
            -o APT::FTPArchive::Release::Architectures="$arch" \
            -o APT::FTPArchive::Release::Components=main \
            -o APT::FTPArchive::Release::Description="flowrun lab stand-in packages (not the real software)" \
            release . >"$work/Release"
        mv "$work/Release" Release
    )
else
    {
        release_header
        echo "SHA256:"
        for f in "main/binary-$arch/Packages" "main/binary-$arch/Packages.gz"; do
            printf ' %s %s %s\n' "$(sha256sum "dists/lab/$f" | cut -d' ' -f1)" \
                "$(wc -c <"dists/lab/$f" | tr -d ' ')" "$f"
        done
    } >dists/lab/Release
fi

# 3. Sign with a key that exists only for this build.
export GNUPGHOME="$work/gnupg"
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' \
    --quick-gen-key "flowrun lab repository (stand-in packages) <lab@flowrun.invalid>" ed25519 sign never
fpr=$(gpg --batch --quiet --no-auto-check-trustdb --with-colons --list-secret-keys 2>/dev/null | awk -F: '/^fpr:/ { print $10; exit }')
gpg --batch --quiet --yes --armor --export "$fpr" >flowrun-lab.asc
gpg --batch --quiet --yes --export "$fpr" >flowrun-lab.gpg
gpg --batch --quiet --yes --local-user "$fpr" --clearsign --digest-algo SHA512 \
    -o dists/lab/InRelease dists/lab/Release
gpg --batch --quiet --yes --local-user "$fpr" --armor --detach-sign --digest-algo SHA512 \
    -o dists/lab/Release.gpg dists/lab/Release
gpgv --quiet --keyring "$out/flowrun-lab.gpg" dists/lab/InRelease >/dev/null 2>&1 || {
    echo "build-repo: the signature just made does not verify" >&2
    exit 1
}

echo "built $(ls pool/main | wc -l) packages in $out (suite lab, component main, arch $arch, key $fpr)"
