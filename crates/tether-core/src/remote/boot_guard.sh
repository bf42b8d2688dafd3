# tether's boot-trial guard (docs/deploy.md, "The reboot trial").
#
# Installed by PrepareBootTrial as /var/lib/tether/boot-trial/guard, run at
# every boot by the unit tether-boot-trial.service in
# /etc/systemd/system.control (a unit directory NixOS's /etc management does
# not own) until the trial ends. boot_trial.rs prepends the settings:
#   dir, deploy, new, old, old_gen, new_gen, created, entry, first_lease,
#   unit_files, old_root, and S_* (state names), E_* (journal event names),
#   journal().
#
# On the trial boot of the new system it holds the lease: when the deployer
# neither renews nor confirms in time, or asks it to, it reboots the host,
# and as the boot loader's one-shot entry was consumed by this boot, the
# host comes back on its default entry, the old system. On any boot of
# another system (that reboot, a crash, a hang ended by a power cycle) it
# never acts: it puts the profile and the boot entries back as they were
# and removes itself. `guard abandon` (a trial whose reboot never came) does
# the same without a reboot.
set -u
umask 077

state() { st=missing; read -r st 2>/dev/null <"$dir/state"; }
set_state() { printf '%s\n' "$1" >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state"; }
uninstall() { rm -f $unit_files; }
uptime_s() { read -r up _ </proc/uptime; up=${up%%.*}; }

exec 8>>"$dir/state.lock" || { uninstall; exit 0; }

# Puts the declared state back to the deploy's pre-deploy snapshots
# (state.sh; `restoreOnRollback`), keeping what the trial wrote as a failed
# state: once per trial, on whichever boot comes first to roll back (the
# trial boot before it reboots, or the old system's boot after a crash).
# $1 says when, for the journal.
restore_data() {
    [ "${STATE_RESTORE:-no}" = yes ] || return 0
    [ -e "$dir/restore.rc" ] && return 0
    state_restore_journalled "$dir" "$deploy" "$1"
}

# Puts the profile and the boot entries back as they were before the trial
# and ends it `rolled-back` (or `restore-failed`) with cause $1. Under the
# state lock.
restore() {
    printf '%s\n' "$1" >"$dir/cause"
    problem=
    # A generation the trial made goes; the old one is the profile again.
    if [ -n "$old_gen" ]; then
        nix-env -p /nix/var/nix/profiles/system --switch-generation "$old_gen" >/dev/null 2>&1 || problem="$problem switch-generation"
    fi
    if [ "$created" = yes ] && [ -n "$new_gen" ] && [ "$new_gen" != "$old_gen" ]; then
        nix-env -p /nix/var/nix/profiles/system --delete-generations "$new_gen" >/dev/null 2>&1 || problem="$problem delete-generations"
    fi
    # The old system's own installer rewrites the entries (the failed
    # generation's entry goes) and keeps itself the default. Another
    # activation may hold NixOS's switch lock for a moment.
    tries=0
    while :; do
        "$old/bin/switch-to-configuration" boot >"$dir/restore.log" 2>&1
        rc=$?
        [ "$rc" -eq 11 ] && [ "$tries" -lt 60 ] || break
        tries=$((tries + 1))
        sleep 1
    done
    [ "$rc" -eq 0 ] || problem="$problem boot-loader($rc)"
    # A one-shot still naming the trial's entry (the host never booted it)
    # must not fire at some later reboot.
    bootctl set-oneshot "" >/dev/null 2>&1 || true
    rm -f "$old_root"
    if [ -n "$problem" ]; then
        printf '%s\n' "${problem# }" >"$dir/problem"
        set_state "$S_RESTORE_FAILED"
        journal "$E_ROLLBACK_FAILED" "reboot trial over ($1); restoring the profile and boot entries failed:$problem"
    else
        set_state "$S_ROLLED_BACK"
        journal "$E_ROLLED_BACK" "reboot trial over ($1): the previous system is the profile and boot default again"
    fi
    uninstall
}

if [ "${1:-}" = abandon ]; then
    flock -w 60 8 || exit 1
    state
    [ "$st" = "$S_PREPARED" ] || exit 1
    restore abandoned
    exit 0
fi

state
case "$st" in
    "$S_PREPARED" | "$S_BOOTED" | "$S_CONFIRMED" | "$S_ROLLING_BACK") ;;
    *) uninstall; exit 0 ;;
esac

# NixOS's stage 2 links /run/booted-system before systemd starts; the lab's
# emulated stage 2 does it a little later in boot.
i=0
while [ ! -e /run/booted-system ] && [ "$i" -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
booted=
[ -e /run/booted-system ] && booted=$(readlink -f /run/booted-system 2>/dev/null)
# No booted system at all: this boot never got as far as a stage 2 (it
# hangs). Nothing to judge; the next boot decides.
[ -n "$booted" ] || exit 0
read -r boot </proc/sys/kernel/random/boot_id
trial_boot=; read -r trial_boot 2>/dev/null <"$dir/trial_boot_id"

if [ "$booted" != "$new" ]; then
    # Another system booted: the trial is over, whatever ended it.
    flock -w 60 8
    state
    cause=booted-other
    [ -r "$dir/cause" ] && read -r cause <"$dir/cause"
    [ "$st" = "$S_CONFIRMED" ] && cause=confirmed-not-persisted
    [ "$st" = "$S_PREPARED" ] && cause=never-booted
    # The new system ran unconfirmed (it crashed, or hung and was power
    # cycled): its data goes back too, as early in this boot as the guard
    # runs; the declared units, stopped if they started already, are
    # started again. A confirmed trial's data is the new system's, kept.
    case "$st" in
        "$S_BOOTED" | "$S_ROLLING_BACK")
            if [ "${STATE_RESTORE:-no}" = yes ] && [ ! -e "$dir/restore.rc" ]; then
                restore_data "as the previous system booted"
                # Stopping them also stopped what requires them: the boot's
                # target brings all of it back.
                [ -n "$STATE_UNITS" ] && systemctl start --no-block $STATE_UNITS default.target >/dev/null 2>&1
            fi
            ;;
    esac
    restore "$cause"
    flock -u 8
    exit 0
fi

flock -w 60 8
state
if [ "$st" = "$S_CONFIRMED" ]; then
    # Confirmed on an earlier boot of the new system and booted again: the
    # deployer persisted it (the new system booted as the default) but its
    # end of the trial never arrived. Nothing to guard or restore.
    if [ "$boot" != "$trial_boot" ]; then
        set_state "$S_FINISHED"
        rm -f "$old_root" "$dir/token"
        journal "$E_CONFIRMED" "reboot trial: confirmed on an earlier boot, the new system booted again; guard removed"
        uninstall
    fi
    flock -u 8
    exit 0
fi
if [ "$st" = "$S_PREPARED" ]; then
    # The trial boot: the lease runs from now.
    uptime_s
    echo $((up + first_lease)) >"$dir/lease.new" && mv -f "$dir/lease.new" "$dir/lease"
    printf '%s\n' "$boot" >"$dir/trial_boot_id"
    set_state "$S_BOOTED"
    journal "$E_BOOTED" "booted the new system on trial; lease ${first_lease}s"
elif [ "$st" = "$S_BOOTED" ] && [ "$boot" != "$trial_boot" ]; then
    # The new system booted again without a verdict (it crashed and was
    # picked by hand): its lease belongs to another boot. Back to the old.
    printf '%s\n' lease-lapsed >"$dir/cause"
    set_state "$S_ROLLING_BACK"
fi
flock -u 8

while :; do
    state
    case "$st" in
        "$S_BOOTED") ;;
        "$S_ROLLING_BACK") break ;;
        # Confirmed: the deployer persists and ends the trial.
        *) exit 0 ;;
    esac
    lease=0
    read -r lease 2>/dev/null <"$dir/lease"
    uptime_s
    if [ "$up" -ge "${lease:-0}" ]; then
        flock -w 60 8
        # A renewal may have landed meanwhile: decide on what is there now.
        state
        lease=0
        read -r lease 2>/dev/null <"$dir/lease"
        uptime_s
        if [ "$st" = "$S_BOOTED" ] && [ "$up" -ge "${lease:-0}" ]; then
            printf '%s\n' lease-lapsed >"$dir/cause"
            set_state "$S_ROLLING_BACK"
        fi
        flock -u 8
        continue
    fi
    sleep 1
done

journal "$E_ROLLING_BACK" "reboot trial not confirmed ($(cat "$dir/cause" 2>/dev/null)): rebooting into the default entry, the previous system"
# The data first, while the new system still runs (its units are stopped
# for it): the previous system boots on its own data.
restore_data "before rebooting into the previous system"
systemctl reboot || systemctl reboot --force
exit 0
