# tether guard for one deploy. Runs on the target as a transient systemd
# service (systemd-run, Restart=on-failure), owned by PID 1 and not by any
# SSH session, so it survives SSH loss, sshd restarts and the deployer being
# killed; if it is killed itself, systemd starts it again and it goes on
# from the state it keeps in files.
#
# It holds a lease that the deployer renews. While the deploy is on trial
# (state armed) it rolls the host back to the previous system with that
# system's own `bin/switch-to-configuration test` when the lease lapses,
# when the new system's activation failed or ended without an exit code, or
# when the deployer asks for it. An activation that failed because another
# process held NixOS's switch lock changed nothing: the trial ends
# not-activated, without a rollback. After a confirmation it keeps the
# deploy lock until the deployer reports the new system persisted (or not),
# or its lease lapses.
#
# Needs only POSIX sh, coreutils, flock and systemctl; nothing of tether is
# installed on the target. Argument: the deploy's state directory, which
# holds `params` (shell assignments written by tether with every value
# quoted). The state names ($S_*), journal event names ($E_*) and the
# shared functions (resolve, activation_state) are defined above this text
# by tether, from the one place it defines them.
set -u
umask 077
dir=$1
. "$dir/params"
printf '%s\n' "$$" >"$dir/guard.pid.new" && mv -f "$dir/guard.pid.new" "$dir/guard.pid"

# Builtins only, and no subshells, in the polling path: the guard runs
# beside the activation and the health checks and should cost them no CPU.
# A lease that cannot be read counts as lapsed.
look() {
    st=; read -r st 2>/dev/null <"$dir/state"
    read -r up _ </proc/uptime
    now=${up%%.*}
    lease=; read -r lease 2>/dev/null <"$dir/lease"
    case "$lease" in '' | *[!0-9]*) lease=0 ;; esac
}

journal() {
    [ -d /var/lib/tether ] || mkdir -p /var/lib/tether
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$DEPLOY_ID" "$1" \
        "$OLD" "$NEW" "guard" "$2" >>/var/lib/tether/journal
}

# Moves the state from $1 to $2, only if it is still $1, under the state lock
# that confirmations take too: a confirmation and a rollback never both win.
# The wait is bounded; only tether's own scripts take this lock.
move() {
    flock -w 10 "$dir/state.lock" sh -c \
        'test "$(cat "$1/state")" = "$2" && printf "%s\n" "$3" >"$1/state.new" && mv -f "$1/state.new" "$1/state"' \
        sh "$dir" "$1" "$2"
}

# The trial is over: release the deploy lock (when it is still ours) and
# the garbage-collector roots of the two systems, and exit.
finish() {
    holder=; read -r holder 2>/dev/null <"$LOCK_DIR/deploy"
    if [ "$holder" = "$DEPLOY_ID" ]; then
        rm -rf "$LOCK_DIR"
    fi
    rm -f "$GC_ROOTS/$DEPLOY_ID-old" "$GC_ROOTS/$DEPLOY_ID-new"
    exit 0
}

# rollback CAUSE REASON: CAUSE is one of tether's GuardCause words (for the
# deployer), REASON the sentence for people (the host's journal).
rollback() {
    # An activation still waiting for NixOS's switch lock has changed
    # nothing: stopped, the trial ends not-activated, with no rollback (which
    # would wait for the same lock). Frozen first, so that it cannot take
    # the lock between this look and the stop; a frozen process no longer
    # waits, so the second look asks only that it holds nothing.
    switch_lock_use
    if [ "$lock_waits" = yes ] && [ "$lock_other" = yes ]; then
        systemctl kill --signal=SIGSTOP "$ACTIVATION_UNIT" >/dev/null 2>&1
        switch_lock_use
        resolve /run/current-system
        if [ "$lock_ours" != yes ] && [ "$r" = "$CURRENT" ] && [ ! -e "$dir/activation.rc" ] &&
            move "$S_ARMED" "$S_NOT_ACTIVATED"; then
            systemctl stop "$ACTIVATION_UNIT" >/dev/null 2>&1
            printf 'waited\n' >"$dir/activation.locked"
            journal "$E_NOT_ACTIVATED" "$2; the activation was still waiting for the NixOS switch lock, held by PID ${lock_holder:-?}: stopped, nothing was activated"
            finish
        fi
        systemctl kill --signal=SIGCONT "$ACTIVATION_UNIT" >/dev/null 2>&1
    fi
    move "$S_ARMED" "$S_ROLLING_BACK" || return 0
    printf '%s\n' "$1" >"$dir/cause"
    printf '%s\n' "$2" >"$dir/reason"
    journal "$E_ROLLING_BACK" "$2"
    # A hung activation must not keep running (nor hold the NixOS
    # switch-to-configuration lock) while the old system is re-activated.
    systemctl stop "$ACTIVATION_UNIT" >/dev/null 2>&1
    # The declared state goes back to its pre-deploy snapshot before the
    # old system starts its units again; what the trial wrote is kept as
    # a failed state (state.sh). A failed restore leaves the data as it is
    # and does not stop the rollback of the system.
    if [ "${STATE_RESTORE:-no}" = yes ]; then
        state_restore_journalled "$dir" "$DEPLOY_ID" "before the rollback"
    fi
    # Bounded: a switch-to-configuration that waits for a lock someone
    # else holds must not keep the host (and the deployer) waiting forever.
    # Exit 11 (the switch lock was taken) with nobody holding it any more
    # was a moment's holder: try again, a few times. A holder still there
    # is reported below.
    tries=0
    while :; do
        timeout -k 5 "$ROLLBACK_SECONDS" "$OLD/bin/switch-to-configuration" test >"$dir/rollback.log" 2>&1
        rc=$?
        [ "$rc" = 11 ] || break
        switch_lock_use
        [ "$lock_other" = yes ] && break
        tries=$((tries + 1))
        [ "$tries" -lt 5 ] || break
        sleep 1
    done
    printf '%s\n' "$rc" >"$dir/rollback.rc"
    resolve /run/current-system
    # A rollback that failed while another process holds the switch lock
    # did not run (ng exits 11 at once, the older one waits until the
    # timeout): the host's state is whatever that process makes it.
    switch_lock_use
    if [ "$r" = "$OLD" ] && { [ "$rc" = 0 ] || [ "$lock_other" != yes ]; }; then
        move "$S_ROLLING_BACK" "$S_ROLLED_BACK"
        journal "$E_ROLLED_BACK" "$2; switch-to-configuration test of the previous system exited $rc"
    else
        move "$S_ROLLING_BACK" "$S_ROLLBACK_FAILED"
        held=; [ "$lock_other" = yes ] && held="; the NixOS switch lock is held by PID ${lock_holder:-?}"
        journal "$E_ROLLBACK_FAILED" "$2; switch-to-configuration test of the previous system exited $rc$held"
    fi
    finish
}

# Once per trial, not again when systemd restarts a killed guard.
if [ ! -e "$dir/guard.started" ]; then
    : >"$dir/guard.started"
    journal "$E_ARMED" "lease ${LEASE_SECONDS}s; deployer ${DEPLOYER:-unknown}"
fi
while :; do
    look
    case "$st" in
    "$S_ARMED")
        if [ -e "$dir/rollback-request" ]; then
            request=; read -r request 2>/dev/null <"$dir/rollback-request"
            rollback requested "deployer asked: $request"
        fi
        activation_state
        case "$act" in
        exited)
            if [ "$rc" != 0 ]; then
                if [ -e "$dir/activation.locked" ]; then
                    # switch-to-configuration could not take NixOS's switch
                    # lock (another activation holds it): nothing changed.
                    if move "$S_ARMED" "$S_NOT_ACTIVATED"; then
                        journal "$E_NOT_ACTIVATED" "switch-to-configuration exited $rc: another process holds the NixOS switch lock; nothing was activated"
                        finish
                    fi
                else
                    rollback "activation-failed $rc" "activation exited $rc"
                fi
            fi
            ;;
        died)
            rollback activation-died "the activation ended without an exit code"
            ;;
        esac
        if [ "$now" -ge "$lease" ]; then
            rollback lease-expired "lease expired: the deployer did not confirm in time"
        fi
        ;;
    "$S_CONFIRMED")
        if [ "$now" -ge "$lease" ]; then
            journal "$E_CONFIRMED_UNFINISHED" "confirmed, but the deployer never reported persisting"
            finish
        fi
        ;;
    *)
        finish
        ;;
    esac
    sleep 0.5
done
