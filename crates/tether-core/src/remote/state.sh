# tether's state functions (docs/state.md): check, snapshot, list, restore
# and prune the btrfs subvolumes and ZFS datasets a host declares. state.rs
# prepends the settings: STATE_BTRFS, STATE_ZFS, STATE_UNITS (words without
# whitespace, validated by tether), STOP_SECONDS, COPY_SECONDS.
#
# Ownership: tether only ever touches what it made. btrfs snapshots live in
# <parent>/.tether-snapshots/<name>/ as <id>.pre-deploy and
# <id>.failed-state.<time>; ZFS snapshots are <dataset>@tether-<id>-pre-deploy
# with the user property tether:kind, and ZFS failed states are copies under
# <pool>/tether-failed/<id>-failed-state-<time>/ (tether:source names the
# dataset they were copied from). Nothing of the user's is ever destroyed.

snapdir() { sd="${1%/*}/.tether-snapshots/${1##*/}"; }
stamp() { date -u +%Y%m%dT%H%M%S; }
# The last non-empty line of $1: a one-line reason.
last_line() {
    ll=
    while IFS= read -r l; do [ -n "$l" ] && ll=$l; done <<EOT
$1
EOT
    printf '%s' "$ll"
}
# Every dataset of a recursive snapshot of $1, parents first.
zfs_tree() { zfs list -H -o name -r -t filesystem,volume "$1" 2>/dev/null; }
zfs_has() { zfs list -H -o name "$1" >/dev/null 2>&1; }

# Prints `problem=<code> <what>` for every declaration the host cannot honour.
state_check() {
    if [ -n "$STATE_BTRFS" ]; then
        if ! command -v btrfs >/dev/null 2>&1; then
            echo "problem=missing-tool btrfs"
        else
            for p in $STATE_BTRFS; do
                for o in $STATE_BTRFS; do
                    case "$p" in "$o"/*) echo "problem=nested $p inside $o" ;; esac
                done
                if [ ! -d "$p" ]; then echo "problem=no-path $p"
                elif ! btrfs subvolume show "$p" >/dev/null 2>&1; then echo "problem=not-subvolume $p"
                elif mountpoint -q "$p" 2>/dev/null; then echo "problem=mount-point $p"
                fi
            done
        fi
    fi
    if [ -n "$STATE_ZFS" ]; then
        if ! command -v zfs >/dev/null 2>&1; then
            echo "problem=missing-tool zfs"
        else
            for d in $STATE_ZFS; do
                for o in $STATE_ZFS; do
                    case "$d" in "$o"/*) echo "problem=nested $d inside $o" ;; esac
                done
                zfs_has "$d" || echo "problem=no-dataset $d"
            done
        fi
    fi
}

# state_take ID: one read-only snapshot per subvolume, one recursive
# snapshot of all datasets (one per dataset where zfs takes one name only).
# Prints `snap=...` per snapshot; on a failure `take_failed=<fs> <volume>
# <why>`, and returns 1.
state_take() {
    for p in $STATE_BTRFS; do
        snapdir "$p"
        s="$sd/$1.pre-deploy"
        if [ ! -e "$s" ]; then
            out=$({ mkdir -p "$sd" && btrfs subvolume snapshot -r "$p" "$s"; } 2>&1) || {
                echo "take_failed=btrfs $p $(last_line "$out")"; return 1; }
        fi
        echo "snap=btrfs $p $1.pre-deploy $s"
    done
    todo=
    for d in $STATE_ZFS; do
        zfs_has "$d@tether-$1-pre-deploy" || todo="$todo $d@tether-$1-pre-deploy"
    done
    if [ -n "$todo" ]; then
        # One command: OpenZFS snapshots all the datasets in one
        # transaction group, so data and log datasets agree.
        out=$(zfs snapshot -r -o tether:kind=pre-deploy -o tether:deploy="$1" $todo 2>&1) || {
            case "$out" in
                *"too many arguments"*)
                    # zfs-fuse takes one name at a time: each tree is
                    # atomic, the trees are not (docs/state.md).
                    for s in $todo; do
                        out=$(zfs snapshot -r -o tether:kind=pre-deploy -o tether:deploy="$1" "$s" 2>&1) || {
                            echo "take_failed=zfs ${s%@*} $(last_line "$out")"; return 1; }
                    done
                    ;;
                *)
                    for s in $todo; do break; done
                    echo "take_failed=zfs ${s%@*} $(last_line "$out")"; return 1
                    ;;
            esac
        }
    fi
    for d in $STATE_ZFS; do
        echo "snap=zfs $d tether-$1-pre-deploy $d@tether-$1-pre-deploy"
    done
}

# Prints `snap=<fs> <volume> <name> <where>` for every snapshot of tether's.
state_list() {
    for p in $STATE_BTRFS; do
        snapdir "$p"
        for s in "$sd"/*.pre-deploy "$sd"/*.failed-state.*; do
            [ -d "$s" ] && echo "snap=btrfs $p ${s##*/} $s"
        done
    done
    for d in $STATE_ZFS; do
        zfs list -H -t snapshot -o name,tether:kind -d 1 "$d" 2>/dev/null | while IFS='	' read -r name kind; do
            case "$kind" in pre-deploy | failed-state) echo "snap=zfs $d ${name#*@} $name" ;; esac
        done
        pool=${d%%/*}
        zfs list -H -o name -d 1 "$pool/tether-failed" 2>/dev/null | while IFS= read -r entry; do
            [ "$entry" = "$pool/tether-failed" ] && continue
            copy="$entry/${d#*/}"
            src=$(zfs get -H -o value tether:source "$copy" 2>/dev/null) || continue
            [ "$src" = "$d" ] && echo "snap=zfs $d tether-${entry##*/} $copy"
        done
    done
}

# state_restore ID: puts every declared subvolume and dataset back to
# deploy ID's pre-deploy snapshot, keeping what it replaces as a failed
# state. Everything is checked before anything changes. Prints
# `restored=<fs> <volume> <failed state>` per volume, or
# `restore_failed=<fs> <volume> <why>` and returns 1. Units are
# stopped first; starting them is the caller's (the old system's activation).
state_restore() {
    id=$1
    t=$(stamp)
    for p in $STATE_BTRFS; do
        snapdir "$p"
        [ -d "$sd/$id.pre-deploy" ] || { echo "restore_failed=btrfs $p no pre-deploy snapshot of deploy $id"; return 1; }
        [ -d "$p" ] || { echo "restore_failed=btrfs $p is missing; restore it by hand from $sd"; return 1; }
        # A restore cut off between its two renames left this: never guess.
        [ ! -e "$p.tether-restore-$id" ] || {
            echo "restore_failed=btrfs $p an earlier restore left $p.tether-restore-$id; finish or remove it by hand"; return 1; }
    done
    for d in $STATE_ZFS; do
        zfs_has "$d@tether-$id-pre-deploy" || { echo "restore_failed=zfs $d no pre-deploy snapshot of deploy $id"; return 1; }
        [ -n "$(zfs_tree "$d")" ] || { echo "restore_failed=zfs $d its datasets could not be listed"; return 1; }
        # A rollback destroys every newer snapshot: refuse when one is not
        # a failed state's, naming it.
        while IFS= read -r ds; do
            [ -n "$ds" ] || continue
            zfs_has "$ds@tether-$id-pre-deploy" || continue
            newer=$(zfs list -H -t snapshot -o name -d 1 "$ds" 2>/dev/null | {
                seen=; list=
                while IFS= read -r name; do
                    if [ "$name" = "$ds@tether-$id-pre-deploy" ]; then seen=yes
                    elif [ -n "$seen" ]; then list="$list $name"
                    fi
                done
                printf '%s' "$list"; })
            if [ -n "$newer" ]; then
                echo "restore_failed=zfs $d rolling $ds back would destroy the newer snapshots$newer; remove them or restore by hand"
                return 1
            fi
        done <<EOT
$(zfs_tree "$d")
EOT
    done
    if [ -n "$STATE_UNITS" ]; then
        timeout -k 5 "$STOP_SECONDS" systemctl stop $STATE_UNITS >/dev/null 2>&1
        # A unit still running would write past the failed state: nothing
        # is restored then.
        for u in $STATE_UNITS; do
            if systemctl is-active --quiet "$u"; then
                first=$(for v in $STATE_BTRFS $STATE_ZFS; do echo "$v"; break; done)
                case "$first" in /*) fs=btrfs ;; *) fs=zfs ;; esac
                echo "restore_failed=$fs $first $u is still running after ${STOP_SECONDS}s of stopping it; nothing was restored"
                return 1
            fi
        done
    fi
    for p in $STATE_BTRFS; do
        snapdir "$p"
        fresh="$p.tether-restore-$id"
        failed="$sd/$id.failed-state.$t"
        out=$(btrfs subvolume snapshot "$sd/$id.pre-deploy" "$fresh" 2>&1) || {
            echo "restore_failed=btrfs $p $(last_line "$out")"; return 1; }
        out=$(mv -T "$p" "$failed" 2>&1) || {
            echo "restore_failed=btrfs $p keeping the failed state: $(last_line "$out") (the restored copy is at $fresh)"; return 1; }
        out=$(mv -T "$fresh" "$p" 2>&1) || {
            mv -T "$failed" "$p"
            echo "restore_failed=btrfs $p $(last_line "$out")"; return 1; }
        btrfs property set -ts "$failed" ro true >/dev/null 2>&1
        echo "restored=btrfs $p $failed"
    done
    copy_deadline=$(( $(date +%s) + COPY_SECONDS ))
    for d in $STATE_ZFS; do
        pool=${d%%/*}
        failed="tether-$id-failed-state-$t"
        entry="$pool/tether-failed/$id-failed-state-$t"
        copy="$entry/${d#*/}"
        out=$(zfs snapshot -r -o tether:kind=failed-state -o tether:deploy="$id" "$d@$failed" 2>&1) || {
            echo "restore_failed=zfs $d $(last_line "$out")"; return 1; }
        # The failed state is copied out of the tree before the rollback,
        # which would destroy its snapshot: a copy, since ZFS keeps no
        # snapshot once its dataset is rolled back past it.
        if ! zfs_has "$pool/tether-failed"; then
            out=$(zfs create -o mountpoint=none -o canmount=off "$pool/tether-failed" 2>&1) || {
                echo "restore_failed=zfs $d $(last_line "$out")"; return 1; }
        fi
        out=$(zfs create -p -o canmount=off "${copy%/*}" 2>&1)
        zfs_has "${copy%/*}" || { echo "restore_failed=zfs $d $(last_line "$out")"; return 1; }
        while IFS= read -r ds; do
            [ -n "$ds" ] || continue
            zfs_has "$ds@$failed" || continue
            rel=${ds#"$d"}
            left=$(( copy_deadline - $(date +%s) ))
            [ "$left" -gt 0 ] || { echo "restore_failed=zfs $d copying the failed state took over ${COPY_SECONDS}s"; return 1; }
            # An encrypted dataset is copied as it is stored (raw), never
            # as plaintext into an unencrypted tether-failed.
            raw=
            case "$(zfs get -H -o value encryption "$ds" 2>/dev/null)" in "" | off | -) ;; *) raw=-w ;; esac
            out=$({ timeout "$left" zfs send $raw "$ds@$failed" | zfs receive -u "$copy$rel"; } 2>&1)
            zfs_has "$copy$rel@$failed" || {
                echo "restore_failed=zfs $d copying the failed state of $ds: $(last_line "$out")"; return 1; }
            zfs set tether:source="$ds" "$copy$rel" >/dev/null 2>&1
        done <<EOT
$(zfs_tree "$d")
EOT
        while IFS= read -r ds; do
            [ -n "$ds" ] || continue
            if ! zfs_has "$ds@tether-$id-pre-deploy"; then
                echo "warning=$ds was created after the snapshot: kept as it is"
                continue
            fi
            out=$({ zfs destroy "$ds@$failed" && zfs rollback "$ds@tether-$id-pre-deploy"; } 2>&1) || {
                echo "restore_failed=zfs $d rolling back $ds: $(last_line "$out")"; return 1; }
        done <<EOT
$(zfs_tree "$d")
EOT
        echo "restored=zfs $d $copy"
    done
}

# state_restore_journalled DIR ID WHEN: a guard's restore. state_restore ID
# with its output kept in DIR/restore.{out,err,rc} (what the deployer's look
# reads), then one line in the host's journal through the caller's
# journal() and E_DATA_* names, saying WHEN it ran.
state_restore_journalled() {
    state_restore "$2" >"$1/restore.out" 2>"$1/restore.err"
    rrc=$?
    printf '%s\n' "$rrc" >"$1/restore.rc"
    summary=
    while IFS= read -r l; do
        case "$l" in restored=* | restore_failed=*) summary="$summary${summary:+; }$l" ;; esac
    done <"$1/restore.out"
    summary=$(printf '%s' "$summary" | tr '\t' ' ')
    if [ "$rrc" = 0 ]; then
        journal "$E_DATA_RESTORED" "restored $3: $summary"
    else
        journal "$E_DATA_RESTORE_FAILED" "restore $3 failed: $summary"
    fi
}

# state_prune KEEP PROTECTED NEWEST_CONFIRMED: removes tether's pre-deploy
# snapshots beyond the newest KEEP per volume (never one of the deploy ids
# in PROTECTED), and failed states older than the newest confirmed deploy
# beyond the newest KEEP. Prints `pruned=<fs> <volume> <name>` and
# `prune_failed=<fs> <volume> <name> <why>`.
state_prune() {
    keep=$1; protected=" $2 "; confirmed=${3%%-*}
    # older_than STAMP: the failed state is older than the newest confirmed deploy.
    older_than() { [ -n "$confirmed" ] && [ "$(printf '%s\n%s\n' "$1" "$confirmed" | sort | head -n 1)" = "$1" ] && [ "$1" != "$confirmed" ]; }
    for p in $STATE_BTRFS; do
        snapdir "$p"
        for kind in pre-deploy failed-state; do
            if [ "$kind" = pre-deploy ]; then set -- "$sd"/*.pre-deploy
            else
                # Oldest first by the time they were kept, not by deploy id:
                # a restore of an old deploy keeps the newest failed state.
                set -- $(for s in "$sd"/*.failed-state.*; do [ -d "$s" ] && printf '%s %s\n' "${s##*.}" "$s"; done | sort | while read -r _ s; do printf '%s\n' "$s"; done)
            fi
            [ -n "${1:-}" ] && [ -d "$1" ] || continue
            total=$#; i=0
            for s in "$@"; do
                i=$((i + 1))
                [ $((total - i)) -ge "$keep" ] || break
                name=${s##*/}; sid=${name%%.*}
                case "$protected" in *" $sid "*) continue ;; esac
                if [ "$kind" = failed-state ]; then older_than "${name##*.}" || continue; fi
                if out=$(btrfs subvolume delete "$s" 2>&1); then echo "pruned=btrfs $p $name"
                else echo "prune_failed=btrfs $p $name $(last_line "$out")"; fi
            done
        done
    done
    for d in $STATE_ZFS; do
        pool=${d%%/*}
        set -- $(zfs list -H -t snapshot -o name,tether:kind -d 1 "$d" 2>/dev/null | while IFS='	' read -r name kind; do
            [ "$kind" = pre-deploy ] && printf '%s\n' "${name#*@}"; done)
        total=$#; i=0
        for name in "$@"; do
            i=$((i + 1))
            [ $((total - i)) -ge "$keep" ] || break
            sid=${name#tether-}; sid=${sid%-pre-deploy}
            case "$protected" in *" $sid "*) continue ;; esac
            if out=$(zfs destroy -r "$d@$name" 2>&1); then echo "pruned=zfs $d $name"
            else echo "prune_failed=zfs $d $name $(last_line "$out")"; fi
        done
        set -- $(zfs list -H -o name -d 1 "$pool/tether-failed" 2>/dev/null | while IFS= read -r entry; do
            [ "$entry" = "$pool/tether-failed" ] && continue
            zfs_has "$entry/${d#*/}" && printf '%s %s\n' "${entry##*-}" "$entry"; done | sort | while read -r _ e; do printf '%s\n' "$e"; done)
        total=$#; i=0
        for entry in "$@"; do
            i=$((i + 1))
            [ $((total - i)) -ge "$keep" ] || break
            older_than "${entry##*-}" || continue
            if out=$(zfs destroy -r "$entry/${d#*/}" 2>&1); then
                echo "pruned=zfs $d tether-${entry##*/}"
                # The entry's now empty parents go too (a destroy refuses a non-empty one).
                e="$entry/${d#*/}"; e=${e%/*}
                while [ "${#e}" -ge "${#entry}" ] && zfs destroy "$e" >/dev/null 2>&1; do e=${e%/*}; done
            else echo "prune_failed=zfs $d tether-${entry##*/} $(last_line "$out")"; fi
        done
    done
}
