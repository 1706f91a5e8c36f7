#!/usr/bin/env bash
# Installs skywired as a system service, or removes it again.
#
#   systemd/install.sh [--bin-dir DIR]   build the release binaries (or take skywired and visctl
#                                        from DIR) and install them, the unit, the skywire user
#                                        (sysusers.d), its state folder (tmpfiles.d) and a
#                                        commented /etc/skywire/config.yaml (kept if it exists)
#   systemd/install.sh uninstall         remove them, keeping a config that was changed, the
#                                        state folder (the node's key) and the user
#
# With DESTDIR set, every file goes under DESTDIR (for packages) and the running system is left
# alone: no user is created and systemd is not told.
set -euo pipefail
# Folders made here are world-readable whatever the caller's umask: the skywire user reads the
# config.
umask 022

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
destdir=${DESTDIR:-}

bin=/usr/local/bin
unit=/usr/local/lib/systemd/system/skywired.service
sysusers=/usr/local/lib/sysusers.d/skywire.conf
tmpfiles=/usr/local/lib/tmpfiles.d/skywire.conf
config_dir=/etc/skywire
config=$config_dir/config.yaml

usage() {
    echo "usage: $0 [--bin-dir DIR] [install] | $0 uninstall" >&2
    exit 2
}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

# Installing onto this very system, not into DESTDIR.
live() { [[ -z $destdir ]]; }
# ... with systemd running it (not in a container without it).
systemd_running() { live && [[ -d /run/systemd/system ]]; }

place() { # MODE SOURCE TARGET
    install -D -m "$1" "$2" "$destdir$3"
    echo "installed $3"
}

install_all() {
    local bin_dir=$1
    if [[ -z $bin_dir ]]; then
        command -v cargo >/dev/null ||
            fail "cargo is not on PATH: build with \`cargo build --release\` and run again with --bin-dir target/release"
        cargo build --release --manifest-path "$repo/Cargo.toml" --bin skywired --bin visctl
        bin_dir=${CARGO_TARGET_DIR:-$repo/target}/release
    fi
    for program in skywired visctl; do
        [[ -x $bin_dir/$program ]] ||
            fail "$bin_dir/$program is missing: build it (\`cargo build --release\`) or name the folder that holds it with --bin-dir"
    done
    if live; then
        for tool in systemd-sysusers systemd-tmpfiles; do
            command -v "$tool" >/dev/null || fail "$tool is missing: the service needs systemd"
        done
    fi

    place 0755 "$bin_dir/skywired" "$bin/skywired"
    place 0755 "$bin_dir/visctl" "$bin/visctl"
    place 0644 "$repo/systemd/skywired.service" "$unit"
    place 0644 "$repo/systemd/sysusers.conf" "$sysusers"
    place 0644 "$repo/systemd/tmpfiles.conf" "$tmpfiles"
    if [[ -e $destdir$config ]]; then
        echo "kept $config"
    else
        place 0644 "$repo/systemd/config.yaml" "$config"
    fi

    if live; then
        systemd-sysusers "$sysusers"
        systemd-tmpfiles --create "$tmpfiles"
        if systemd_running; then
            systemctl daemon-reload
        fi
        echo "next: set up $config (\`skywired check-config --config $config\` checks it), then \`systemctl enable --now skywired\`"
    fi
}

uninstall_all() {
    if systemd_running && systemctl is-enabled --quiet skywired.service 2>/dev/null; then
        systemctl disable --now skywired.service
    elif systemd_running && systemctl is-active --quiet skywired.service; then
        systemctl stop skywired.service
    fi
    for path in "$bin/skywired" "$bin/visctl" "$unit" "$sysusers" "$tmpfiles"; do
        if [[ -e $destdir$path ]]; then
            rm -f "$destdir$path"
            echo "removed $path"
        fi
    done
    if [[ -e $destdir$config ]]; then
        if cmp -s "$repo/systemd/config.yaml" "$destdir$config"; then
            rm -f "$destdir$config"
            echo "removed $config"
            rmdir --ignore-fail-on-non-empty "$destdir$config_dir"
        else
            echo "kept $config: it differs from systemd/config.yaml"
        fi
    fi
    if systemd_running; then
        systemctl daemon-reload
    fi
    if live; then
        echo "kept /var/lib/skywire (the node's key: delete it to forget the node) and the skywire user (\`userdel skywire\` removes it)"
    fi
}

action=install
bin_dir=
while (($#)); do
    case $1 in
    --bin-dir)
        (($# >= 2)) || usage
        bin_dir=$2
        shift 2
        ;;
    install | uninstall)
        action=$1
        shift
        ;;
    *) usage ;;
    esac
done

case $action in
install) install_all "$bin_dir" ;;
uninstall)
    [[ -z $bin_dir ]] || usage
    uninstall_all
    ;;
esac
