//! Arming and activating, in one session: take the host's deploy lock,
//! write the trial's state directory, root both systems against garbage
//! collection, start the guard (`systemd-run`, owned by PID 1, restarted
//! if it dies) and check it runs, then run the new system's
//! `switch-to-configuration` in its own transient unit (so losing SSH or
//! restarting sshd cannot kill it half-way) and take the health checks'
//! first look at the system. One SSH session less on every deploy than
//! arming and activating apart.
//!
//! Everything under `/run/tether` is root's alone (mode 0700, umask 077):
//! no other local user can open, and so hold, any of tether's locks. Every
//! lock wait is bounded, and arming has a deadline of its own: an arm that
//! was held up (by a lock, a stalled session) past the time the deployer
//! waits for it gives up instead of arming a trial nobody renews.

use std::time::Duration;

use super::boot_trial::{BootTrialState, BOOT_TRIAL_DIR};
use super::checks::{system_state_script, SystemState, SystemStateLook};
use super::guard::{guard_script, lease_bump, GuardSpec, GuardState, GC_ROOTS, SWITCH_LOCK};
use super::state::state_settings;
use super::wire::{all, first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, LOCK_DIR, RESOLVE_FUNCTION, RUN_DIR};
use crate::model::Goal;
use crate::shell::quote;

/// How long arming may take on the host, from its script's start: past
/// this it gives up. The deployer waits [`ARM_WAIT`] for the arm result,
/// longer, so an arm it gave up on has given up too.
pub const ARM_DEADLINE: Duration = Duration::from_secs(20);
/// How long the deployer waits for the arm result before it gives up on
/// arming (and asks the host whether a trial is armed).
pub const ARM_WAIT: Duration = Duration::from_secs(30);
/// The longest wait for the host's arm lock: only tether's own arming
/// holds it, for milliseconds.
const LOCK_WAIT_SECS: u64 = 10;

/// Arms the guard for `spec`, then activates its new system with `goal`.
#[derive(Debug, Clone)]
pub struct ArmAndActivate {
    pub spec: GuardSpec,
    pub goal: Goal,
}

/// The outcome of arming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmResult {
    Armed,
    /// Another deploy (this id) holds the lock with a live guard.
    Busy(String),
    /// The host runs another system than the one the preflight saw.
    Changed(String),
    MissingTool(String),
    /// `systemd-run` could not start the guard, or writing the trial's
    /// state failed (what failed).
    Failed(String),
    /// The guard did not stay up once started.
    GuardDied,
    /// The arm lock stayed taken for the whole bounded wait.
    LockTimeout,
    /// Arming took past its deadline; nothing was armed.
    Expired,
    /// `/run/tether` belongs to someone else than root.
    Untrusted,
}

/// What the session reported: how arming went and, when armed, how the
/// activation exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmReport {
    pub arm: ArmResult,
    /// The activation's exit code (the session's, when armed).
    pub exit_code: Option<i32>,
    /// The activation was stopped before it recorded an exit code.
    pub died: bool,
    /// The activation failed because another process holds NixOS's switch
    /// lock: nothing was activated.
    pub switch_locked: bool,
    /// The activation renewed the lease on its way out.
    pub lease_renewed: bool,
    /// The system state right after the activation: the health checks'
    /// first look, without a session of its own.
    pub first_look: Option<SystemStateLook>,
}

impl ArmAndActivate {
    /// The wrapper the activation unit runs: records its PID, runs
    /// `switch-to-configuration`, notes when it failed only because the
    /// NixOS switch lock is held by another process (ng exits with EAGAIN
    /// then, without touching anything), and records the exit code last,
    /// so a guard or a confirmation that sees the code sees the end.
    fn activation_wrapper() -> String {
        format!(
            r#"set -u
umask 077
dir=$1
. "$dir/params"
{resolve}
printf '%s\n' "$$" >"$dir/activation.pid.new" && mv -f "$dir/activation.pid.new" "$dir/activation.pid"
"$NEW/bin/switch-to-configuration" "$GOAL"
rc=$?
if [ "$rc" != 0 ] && [ -e "$SWITCH_LOCK" ] && ! flock -n -x "$SWITCH_LOCK" true 2>/dev/null; then
    resolve /run/current-system
    if [ "$r" = "$CURRENT" ]; then printf 'held\n' >"$dir/activation.locked"; fi
fi
printf '%s\n' "$rc" >"$dir/activation.rc.new" && mv -f "$dir/activation.rc.new" "$dir/activation.rc"
exit "$rc"
"#,
            resolve = RESOLVE_FUNCTION,
        )
    }

    /// Prints `arm=armed`, or another `arm=` result (see [`ArmResult`]).
    /// Sets `$armed` and `$dir` for the activation that follows.
    fn arm_script(&self) -> String {
        let spec = &self.spec;
        let dir = spec.dir();
        let (root_old, root_new) = spec.gc_roots();
        // The params file is sourced by the guard and the wrapper: quote
        // once for this script and once more for that file.
        let param = |name: &str, value: &str| {
            format!(
                "    printf '%s\\n' {}\n",
                quote(&format!("{name}={}", quote(value)))
            )
        };
        let params: String = [
            param("DEPLOY_ID", spec.deploy_id.as_str()),
            param("CURRENT", spec.current_system.as_str()),
            param("OLD", spec.old_system.as_str()),
            param("NEW", spec.new_system.as_str()),
            param("GOAL", self.goal.as_str()),
            param("ACTIVATION_UNIT", &spec.activation_unit()),
            param("GUARD_UNIT", &spec.guard_unit()),
            param("LOCK_DIR", LOCK_DIR),
            param("GC_ROOTS", GC_ROOTS),
            param("SWITCH_LOCK", SWITCH_LOCK),
            param("LEASE_SECONDS", &spec.lease_secs().to_string()),
            param(
                "ROLLBACK_SECONDS",
                &spec.rollback_limit.as_secs().max(1).to_string(),
            ),
            // A name with tabs or newlines would forge journal lines.
            param("DEPLOYER", &crate::text::one_line(&spec.deployer)),
        ]
        .concat();
        // The declared state the guard restores on a rollback, if any.
        let state_params: String = match &spec.state {
            Some(state) => std::iter::once(param("STATE_RESTORE", "yes"))
                .chain(
                    state_settings(state)
                        .iter()
                        .map(|(name, value)| param(name, value)),
                )
                .collect(),
            None => String::new(),
        };
        let params = params + &state_params;
        let state_tools = spec
            .state
            .as_ref()
            .map(super::state::state_tools)
            .unwrap_or_default();
        format!(
            r#"set -u
umask 077
# A session lost while arming must not leave arming half-done; the
# deadline below bounds how long it may still go on.
trap '' HUP PIPE
read -r up _ </proc/uptime
arm_by=$(( ${{up%%.*}} + {deadline} ))
dir={dir}
lockdir={lock}
run={run}
armed=no
late() {{ read -r up _ </proc/uptime; [ "${{up%%.*}}" -gt "$arm_by" ]; }}
fail() {{ echo "arm=failed"; echo "why=$1"; exit 0; }}
[ -d "$run" ] || mkdir -m 0700 "$run" || fail "mkdir $run"
# Root's alone: an older tether left it readable to everyone.
[ -O "$run" ] || {{ echo "arm=untrusted"; exit 0; }}
chmod 0700 "$run" || fail "chmod $run"
[ -d "$run/deploys" ] || mkdir "$run/deploys" || fail "mkdir $run/deploys"
# Resolve the guard's tools now, to store paths on NixOS: the guard must
# keep working while /run/current-system changes under it.
paths=
for t in sh flock systemctl systemd-run sleep readlink date mv cat rm mkdir timeout stat tr{state_tools}; do
    p=$(command -v "$t") || {{ echo "arm=missing-tool"; echo "missing=$t"; exit 0; }}
    paths="$paths $p"
done
# One readlink for all (this runs on every deploy; spawns cost CPU).
tool_path=
sh_path=
for p in $(readlink -f $paths); do
    [ -n "$sh_path" ] || sh_path=$p
    d=${{p%/*}}
    case ":$tool_path:" in *":$d:"*) ;; *) tool_path="$tool_path${{tool_path:+:}}$d" ;; esac
done
# A lock file anyone but root could have opened (left by an older tether,
# or by hand) is replaced: whoever holds the old one holds nothing.
if [ -e "$run/arm.lock" ] && {{ [ ! -O "$run/arm.lock" ] || [ "$(stat -c %a "$run/arm.lock")" != 600 ]; }}; then
    rm -f "$run/arm.lock" || fail "rm $run/arm.lock"
fi
exec 9>"$run/arm.lock" || fail "open $run/arm.lock"
flock -w {lock_wait} 9 || {{ echo "arm=lock-timeout"; exit 0; }}
if [ -d "$lockdir" ]; then
    unit=; read -r unit 2>/dev/null <"$lockdir/unit"
    if [ -n "$unit" ] && systemctl is-active --quiet "$unit"; then
        holder=; read -r holder 2>/dev/null <"$lockdir/deploy"
        echo "arm=busy"
        echo "busy=$holder"
        exit 0
    fi
    rm -rf "$lockdir"
fi
# A reboot trial that is not over holds the host as well.
bst=; read -r bst 2>/dev/null <{boot_trial}/state
case "$bst" in
    {boot_pending})
        holder=; read -r holder 2>/dev/null <{boot_trial}/deploy
        echo "arm=busy"
        echo "busy=$holder"
        exit 0 ;;
esac
{resolve}
resolve /run/current-system
if [ "$r" != {current} ]; then
    echo "arm=changed"
    echo "current=$r"
    exit 0
fi
if late; then echo "arm=expired"; exit 0; fi
mkdir "$lockdir" "$dir" || fail "mkdir $dir"
undo() {{
    systemctl stop {unit} >/dev/null 2>&1
    rm -rf "$lockdir" "$dir"
    rm -f {root_old} {root_new}
}}
# put FILE TEXT: writes TEXT (printf format %s) to FILE, or undoes the arm.
put() {{ printf '%s' "$2" >"$1" || {{ undo; fail "writing $1"; }}; }}
step() {{ "$@" || {{ undo; fail "$*"; }}; }}
put "$lockdir/deploy" {id_line}
put "$lockdir/unit" {unit_line}
{{
{params}    printf 'TOOL_PATH=%s\n' "'$tool_path'"
    printf 'SH=%s\n' "'$sh_path'"
}} >"$dir/params" || {{ undo; fail "writing $dir/params"; }}
put "$dir/token" {token_line}
put "$dir/state" {armed_line}
read -r up _ </proc/uptime
put "$dir/lease" "$(( ${{up%%.*}} + {lease} ))
"
put "$dir/guard.sh" {guard}
put "$dir/activate.sh" {wrapper}
# The systems of this trial survive a garbage collection while it runs;
# roots of trials that ended without cleaning up (a reboot) go.
[ -d {gc_roots} ] || step mkdir -p {gc_roots}
for root in {gc_roots}/*-old {gc_roots}/*-new; do
    [ -L "$root" ] || continue
    id=${{root##*/}}; id=${{id%-*}}
    [ -d "$run/deploys/$id" ] || rm -f "$root"
done
step ln -sfn {old} {root_old}
step ln -sfn {new} {root_new}
if late; then undo; echo "arm=expired"; exit 0; fi
systemd-run --unit={unit} --description={desc} --quiet --collect \
    --property=Restart=on-failure --property=RestartSec=1 \
    --setenv=PATH="$tool_path:/usr/bin:/bin" "$sh_path" "$dir/guard.sh" "$dir" ||
    {{ undo; fail "systemd-run could not start the guard"; }}
# The guard must be up before anything is activated: it writes its PID
# first thing, a few milliseconds after systemd-run returns; short looks
# (within the same 2 s bound) keep the activation from waiting longer.
tries=0
gpid=
while [ "$tries" -lt 200 ]; do
    gpid=; read -r gpid 2>/dev/null <"$dir/guard.pid"
    [ -n "$gpid" ] && kill -0 "$gpid" 2>/dev/null && break
    gpid=
    sleep 0.01
    tries=$((tries + 1))
done
if [ -z "$gpid" ]; then undo; echo "arm=guard-died"; exit 0; fi
armed=yes
echo "arm=armed"
# Other deploys may check the lock from now on.
exec 9>&-
"#,
            deadline = ARM_DEADLINE.as_secs(),
            dir = quote(&dir),
            lock = quote(LOCK_DIR),
            boot_trial = quote(BOOT_TRIAL_DIR),
            boot_pending = BootTrialState::pending_pattern(),
            run = quote(RUN_DIR),
            lock_wait = LOCK_WAIT_SECS,
            id_line = quote(&format!("{}\n", spec.deploy_id)),
            unit = quote(&spec.guard_unit()),
            unit_line = quote(&format!("{}\n", spec.guard_unit())),
            lease = spec.lease_secs(),
            token_line = quote(&format!("{}\n", spec.token.as_str())),
            armed_line = quote(&format!("{}\n", GuardState::Armed.wire())),
            guard = quote(&guard_script()),
            wrapper = quote(&Self::activation_wrapper()),
            desc = quote(&format!("tether guard for deploy {}", spec.deploy_id)),
            current = quote(spec.current_system.as_str()),
            old = quote(spec.old_system.as_str()),
            new = quote(spec.new_system.as_str()),
            gc_roots = quote(GC_ROOTS),
            root_old = quote(&root_old),
            root_new = quote(&root_new),
            resolve = RESOLVE_FUNCTION,
            state_tools = state_tools,
        )
    }

    /// The `systemd-run` that runs the activation wrapper in its own unit
    /// (needs `$dir` and the deploy's params sourced), then the system's
    /// state as the [`SystemState`] operation prints it. Exits with the
    /// activation's exit code. The activation's output goes to stderr:
    /// stdout carries only this protocol.
    fn activation_command(&self) -> String {
        let spec = &self.spec;
        format!(
            r#"systemd-run --unit={unit} --description={desc} --quiet --collect --pipe --wait \
    --property=TimeoutStopSec={stop_secs} --service-type=exec --setenv=PATH="$TOOL_PATH:/usr/bin:/bin" \
    "$SH" "$dir/activate.sh" "$dir" </dev/null 1>&2
rc=$?
if [ -e "$dir/activation.rc" ]; then
    read -r rc <"$dir/activation.rc"
elif [ -e "$dir/activation.pid" ]; then
    # The wrapper was stopped before it recorded an exit code; systemd-run
    # then reports the unit's result, which is 0 after a SIGTERM.
    echo "activation_died=yes"
    rc=1
else
    # systemd-run failed before the wrapper ran: the exit code is still the
    # activation's result, for the guard too.
    printf '%s\n' "$rc" >"$dir/activation.rc"
fi
if [ -e "$dir/activation.locked" ]; then echo "activation_locked=yes"; fi
# A successful activation renews the lease on its way out: the lease keeper
# then needs no session of its own for a short trial.
if [ "$rc" = 0 ] && {bump}; then echo "lease_renewed=yes"; fi
{state}exit $rc
"#,
            bump = lease_bump(spec),
            stop_secs = crate::spec::ACTIVATION_STOP.as_secs(),
            state = system_state_script(),
            unit = quote(&spec.activation_unit()),
            desc = quote(&format!("tether activation for deploy {}", spec.deploy_id)),
        )
    }
}

impl Operation for ArmAndActivate {
    type Output = ArmReport;
    const OP: Op = Op::ArmAndActivate;

    /// Prints the arm result first (`arm=…`); when armed, the exit code is
    /// the activation's.
    fn script(&self) -> String {
        format!(
            "{}if [ \"$armed\" = yes ]; then\n. \"$dir/params\"\n{}fi\n",
            self.arm_script(),
            self.activation_command()
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<ArmReport, ParseError> {
        let f = parse_fields(&out.stdout);
        let arm = match first(&f, "arm") {
            Some("armed") => ArmResult::Armed,
            Some("busy") => {
                ArmResult::Busy(first(&f, "busy").unwrap_or("another deploy").to_string())
            }
            Some("changed") => {
                ArmResult::Changed(first(&f, "current").unwrap_or_default().to_string())
            }
            Some("missing-tool") => {
                ArmResult::MissingTool(first(&f, "missing").unwrap_or("?").to_string())
            }
            Some("failed") => ArmResult::Failed(all(&f, "why").join("; ")),
            Some("guard-died") => ArmResult::GuardDied,
            Some("lock-timeout") => ArmResult::LockTimeout,
            Some("expired") => ArmResult::Expired,
            Some("untrusted") => ArmResult::Untrusted,
            _ => return Err(ParseError("arming the guard printed no result".into())),
        };
        let armed = arm == ArmResult::Armed;
        Ok(ArmReport {
            arm,
            exit_code: out
                .exit_code
                .filter(|_| armed && first(&f, "activation_died").is_none()),
            died: armed && first(&f, "activation_died") == Some("yes"),
            switch_locked: first(&f, "activation_locked") == Some("yes"),
            lease_renewed: first(&f, "lease_renewed") == Some("yes"),
            first_look: armed.then(|| SystemState.parse(out).ok()).flatten(),
        })
    }
}
