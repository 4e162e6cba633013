#!/usr/bin/env bash
# Installs orchestratord and orchestratorctl as a systemd service.
#
# Usage: scripts/install.sh [OPTIONS]
#   --host NAME|PATH  the host config to install when /etc/orchestrator has
#                     none yet: a host of config/ (mainpc, pc2) or a file.
#                     Default: config/<short hostname>/ when it exists. An
#                     existing config is never replaced.
#   --prefix DIR      binaries go to DIR/bin, docs to DIR/share/doc/orchestrator,
#                     man pages to DIR/share/man/man1, shell completions (bash,
#                     zsh, fish) under DIR/share (default /usr/local; the unit
#                     is rewritten to match)
#   --unit-dir DIR    where the unit goes (default /etc/systemd/system)
#   --bin-dir DIR     take the binaries from DIR (default target/release, built
#                     with `cargo build --release` when missing)
#   --root DIR        install under DIR, a staging root: no group is created,
#                     nothing is started, the unit is verified against DIR
#   --start           systemctl daemon-reload and enable --now (and restart a
#                     running daemon whose binary or unit changed; its agents
#                     keep running)
#   --dry-run         print what would be done, change nothing
#   -h, --help        this text
#
# Running it again changes only what differs. Needs root unless --root or
# --dry-run is given.
set -euo pipefail

prog="install"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

prefix="/usr/local"
unit_dir="/etc/systemd/system"
bin_dir=""
root=""
host=""
start=false
dry_run=false

say() { printf '%s: %s\n' "$prog" "$*"; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}
usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# Runs a command that changes the system, or only prints it with --dry-run.
run() {
    if $dry_run; then
        printf '%s: would run: %s\n' "$prog" "$*"
    else
        "$@"
    fi
}

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (try --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --host) need_value "$@"; host="$2"; shift 2 ;;
        --prefix) need_value "$@"; prefix="$2"; shift 2 ;;
        --unit-dir) need_value "$@"; unit_dir="$2"; shift 2 ;;
        --bin-dir) need_value "$@"; bin_dir="$2"; shift 2 ;;
        --root) need_value "$@"; root="$2"; shift 2 ;;
        --start) start=true; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *)
            printf '%s: unknown argument %s (try --help)\n' "$prog" "$1" >&2
            exit 2
            ;;
    esac
done

for dir in "$prefix" "$unit_dir"; do
    [[ "$dir" == /* ]] || die "$dir must be an absolute path"
done
prefix="${prefix%/}"
unit_dir="${unit_dir%/}"
if [[ -n "$root" ]]; then
    # Created by the first file installed, so a refused run leaves nothing.
    if [[ -d "$root" ]]; then
        root="$(cd "$root" && pwd)"
    elif [[ "$root" != /* ]]; then
        root="$PWD/$root"
    fi
    [[ "$root" != "/" ]] || root=""
fi
if [[ -n "$root" ]] && $start; then
    die "--start cannot be used with --root: a staging root is not this system"
fi
if [[ -z "$root" ]] && ! $dry_run && [[ "$(id -u)" -ne 0 ]]; then
    die "installing into the system needs root (or use --root DIR, or --dry-run)"
fi

config_dir="/etc/orchestrator"
config_file="$config_dir/startup_config.yaml"
unit_name="orchestratord.service"
unit_src="$repo/packaging/systemd/$unit_name"
doc_src="$repo/docs/operations.md"
[[ -f "$unit_src" ]] || die "the unit file $unit_src is missing"

# --- the binaries ----------------------------------------------------------
binaries=(orchestratord orchestratorctl)
if [[ -z "$bin_dir" ]]; then
    bin_dir="$repo/target/release"
    missing=false
    for b in "${binaries[@]}"; do
        [[ -x "$bin_dir/$b" ]] || missing=true
    done
    if $missing; then
        say "building the release binaries (cargo build --release -p orchestratord -p orchestratorctl)"
        command -v cargo >/dev/null || die "cargo is not installed and $bin_dir has no binaries"
        run cargo build --release --manifest-path "$repo/Cargo.toml" -p orchestratord -p orchestratorctl
    fi
fi
if ! $dry_run; then
    for b in "${binaries[@]}"; do
        [[ -x "$bin_dir/$b" ]] || die "$bin_dir/$b is missing or not executable"
    done
fi

# --- which config, decided before anything changes ---------------------------
config_src=""
if [[ -e "$root$config_file" ]]; then
    say "keeping the existing config $root$config_file"
    [[ -z "$host" ]] || say "note: --host $host ignored; remove $config_file to install another"
else
    if [[ -z "$host" ]]; then
        short="$(hostname -s 2>/dev/null || true)"
        if [[ -n "$short" && -f "$repo/config/$short/startup_config.yaml" ]]; then
            host="$short"
            say "no --host given; using config/$short (this machine's name)"
        else
            hosts="$(cd "$repo/config" && for d in */; do
                [[ -f "$d/startup_config.yaml" ]] && printf '%s ' "${d%/}"
            done)"
            die "no config at $config_file yet: pass --host with one of: ${hosts}or a file"
        fi
    fi
    # A bare name is a host of config/; anything else is a file.
    if [[ "$host" != */* && -f "$repo/config/$host/startup_config.yaml" ]]; then
        config_src="$repo/config/$host/startup_config.yaml"
    elif [[ -f "$host" ]]; then
        config_src="$host"
    else
        die "--host $host is neither a file nor a host of config/ (config/$host/startup_config.yaml)"
    fi
    # A config the daemon would refuse is not installed at all.
    if [[ -x "$bin_dir/orchestratord" ]]; then
        # (Its federation key may not exist yet: it is made below.)
        "$bin_dir/orchestratord" check --without-keys --config "$config_src" >/dev/null ||
            die "$config_src is not a valid config (see above)"
    fi
fi

# Installs SRC as DEST with MODE unless DEST already has the same content,
# and says which. The new file is renamed into place, so a running daemon
# keeps the binary it was started from. Sets `state` to changed/unchanged.
state=""
put() {
    local src="$1" dest="$2" mode="$3" from="${4:-$1}"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
        $dry_run || chmod "$mode" "$dest"
        state=unchanged
        say "$dest: up to date"
        return
    fi
    state=changed
    if $dry_run; then
        say "$dest: would install from $from (mode $mode)"
        return
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$src" "$dest.new.$$"
    mv -f "$dest.new.$$" "$dest"
    say "$dest: installed"
}

changed=false
for b in "${binaries[@]}"; do
    dest="$root$prefix/bin/$b"
    if $dry_run && [[ ! -x "$bin_dir/$b" ]]; then
        say "$dest: would install (after the build)"
        continue
    fi
    put "$bin_dir/$b" "$dest" 0755
    [[ "$state" == unchanged ]] || changed=true
done

if [[ -f "$doc_src" ]]; then
    dest="$root$prefix/share/doc/orchestrator/operations.md"
    put "$doc_src" "$dest" 0644
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- man pages and shell completions --------------------------------------------
# `orchestratorctl man` writes a page per verb; `orchestratorctl completion`
# the scripts, bash's with group and agent names asked of the daemon
# (scripts/completion/orchestratorctl-names.bash).
ctl_bin="$bin_dir/orchestratorctl"
if [[ ! -x "$ctl_bin" ]]; then
    say "would install the man pages and shell completions (after the build)"
else
    "$ctl_bin" man --dir "$tmp/man" 2>/dev/null
    pages=0 pages_changed=0
    for page in "$tmp"/man/*.1; do
        put "$page" "$root$prefix/share/man/man1/${page##*/}" 0644 >/dev/null
        pages=$((pages + 1))
        [[ "$state" == unchanged ]] || pages_changed=$((pages_changed + 1))
    done
    if $dry_run; then
        say "$root$prefix/share/man/man1: would install $pages_changed of $pages man pages"
    else
        say "$root$prefix/share/man/man1: $pages man pages ($pages_changed installed, the rest up to date)"
    fi
    mkdir -p "$tmp/completion"
    { "$ctl_bin" completion bash; cat "$repo/scripts/completion/orchestratorctl-names.bash"; } \
        >"$tmp/completion/orchestratorctl.bash"
    "$ctl_bin" completion zsh >"$tmp/completion/_orchestratorctl"
    "$ctl_bin" completion fish >"$tmp/completion/orchestratorctl.fish"
    put "$tmp/completion/orchestratorctl.bash" \
        "$root$prefix/share/bash-completion/completions/orchestratorctl" 0644
    put "$tmp/completion/_orchestratorctl" "$root$prefix/share/zsh/site-functions/_orchestratorctl" 0644
    put "$tmp/completion/orchestratorctl.fish" \
        "$root$prefix/share/fish/vendor_completions.d/orchestratorctl.fish" 0644
fi

# --- the unit, with the prefix it will find the binaries under ---------------
sed "s#/usr/local/#$prefix/#g" "$unit_src" >"$tmp/$unit_name"
unit_dest="$root$unit_dir/$unit_name"
put "$tmp/$unit_name" "$unit_dest" 0644 "$unit_src (prefix $prefix)"
[[ "$state" == unchanged ]] || changed=true

# --- the config ---------------------------------------------------------------
[[ -d "$root$config_dir" ]] || run mkdir -p "$root$config_dir"
if [[ -n "$config_src" ]]; then
    run install -m 0644 "$config_src" "$root$config_file"
    $dry_run || say "$root$config_file: installed from $config_src"
fi
if [[ -f "$root$config_file" ]] && ! grep -Eq '^[[:space:]]*control:' "$root$config_file"; then
    say "note: $config_file sets no control.group: only root may use the control socket;"
    say "      add 'control: {group: orchestrator}' to let members of that group use orchestratorctl"
fi

# --- the federation key -------------------------------------------------------
# A host with peers needs its CURVE key pair; one is made, never replaced.
if [[ -f "$root$config_file" ]] && grep -Eq '^federation:' "$root$config_file"; then
    fed_host="$(sed -nE 's/^host: *\{ *name: *([A-Za-z0-9._-]+).*/\1/p' "$root$config_file" | head -n 1)"
    key_dir="$root$config_dir"
    if [[ -z "$fed_host" ]]; then
        say "note: cannot tell this config's host name; make its key with: orchestratorctl keys generate HOST --out $config_dir"
    elif [[ -f "$key_dir/$fed_host.key" ]]; then
        say "$config_dir/$fed_host.key: exists"
    elif [[ -x "$bin_dir/orchestratorctl" ]] && ! $dry_run; then
        "$bin_dir/orchestratorctl" keys generate "$fed_host" --out "$key_dir" >/dev/null
        say "$config_dir/$fed_host.key: made (mode 0600); its public key, for the peers' configs:"
        say "    $(cat "$key_dir/$fed_host.pub")"
    else
        say "would make $config_dir/$fed_host.key (orchestratorctl keys generate $fed_host --out $config_dir)"
    fi
fi

# --- the control socket's group -----------------------------------------------
if [[ -n "$root" ]]; then
    say "staging root: not creating the orchestrator group (on the target: groupadd --system orchestrator)"
elif getent group orchestrator >/dev/null; then
    say "group orchestrator: exists"
else
    run groupadd --system orchestrator
    $dry_run || say "group orchestrator: created"
fi

# --- check the unit as systemd will read it -------------------------------------
if $dry_run; then
    say "would verify $unit_dest with systemd-analyze"
elif command -v systemd-analyze >/dev/null; then
    check="$unit_dest"
    if [[ -n "$root" ]]; then
        # The unit names the binaries by their final paths; point a copy of
        # it at the staged ones, so verify checks what was installed.
        mkdir -p "$tmp/verify"
        sed "s#$prefix/bin/#$root$prefix/bin/#g" "$unit_dest" >"$tmp/verify/$unit_name"
        check="$tmp/verify/$unit_name"
    fi
    if ! out="$(systemd-analyze verify "$check" 2>&1)" || [[ -n "$out" ]]; then
        printf '%s\n' "$out" >&2
        die "systemd-analyze verify found problems in $unit_dest"
    fi
    say "systemd-analyze verify: $unit_dest is clean"
else
    say "systemd-analyze not found; unit not verified"
fi

# --- start ----------------------------------------------------------------------
if $start; then
    was_active=false
    if systemctl is-active --quiet "$unit_name" 2>/dev/null; then was_active=true; fi
    run systemctl daemon-reload
    run systemctl enable --now "$unit_name"
    if $was_active && $changed; then
        say "restarting the running daemon on the new binary or unit (agents keep running)"
        run systemctl restart "$unit_name"
    fi
    $dry_run || say "started: systemctl status orchestratord; orchestratorctl status"
elif [[ -z "$root" ]]; then
    say "done. Start it with: systemctl daemon-reload && systemctl enable --now orchestratord"
    if $changed && systemctl is-active --quiet "$unit_name" 2>/dev/null; then
        say "the running daemon still runs the old version: systemctl daemon-reload && systemctl restart orchestratord"
    fi
else
    say "done: staged under $root"
fi
