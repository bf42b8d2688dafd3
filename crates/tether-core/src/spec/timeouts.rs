//! Time limits as data: what the inventory and the flags set (in seconds,
//! all optional), and the resolved limits of one host's deploy.

use std::time::Duration;

/// Time limits of one host's deploy (documented in docs/deploy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long `switch-to-configuration` may run.
    pub activation: Duration,
    /// The guard's lease: how long the target waits for the deployer before
    /// rolling back by itself. Renewed every fifth of it.
    pub lease: Duration,
    /// How long to keep trying to confirm over fresh connections.
    pub confirm: Duration,
    /// How long the guard's rollback (`switch-to-configuration test` of the
    /// previous system) may run. After giving up on a trial, tether waits
    /// the lease, this, and [`ROLLBACK_MARGIN`] to learn how it ended
    /// before reporting the host unknown.
    pub rollback: Duration,
    /// How long a closure copy may take.
    pub copy: Duration,
    /// How long one ordinary remote command may take.
    pub command: Duration,
    /// How long a host may take to come back from a reboot (the reboot
    /// trial's boot, `--reboot`).
    pub reboot: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            activation: Duration::from_secs(300),
            lease: Duration::from_secs(15),
            confirm: Duration::from_secs(20),
            rollback: Duration::from_secs(90),
            copy: Duration::from_secs(1800),
            command: Duration::from_secs(30),
            reboot: Duration::from_secs(300),
        }
    }
}

/// Per-host time limits in seconds (`timeouts = { lease = 15; … }`); unset
/// keys take tether's defaults (docs/deploy.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutSettings {
    pub activation: Option<u64>,
    pub lease: Option<u64>,
    pub confirm: Option<u64>,
    pub rollback: Option<u64>,
    pub copy: Option<u64>,
    pub reboot: Option<u64>,
}

impl TimeoutSettings {
    /// The keys `timeouts` accepts, with their allowed range in seconds.
    pub const KEYS: &'static [(&'static str, u64, u64)] = &[
        ("activation", 1, 86_400),
        ("lease", 3, 3_600),
        ("confirm", 1, 3_600),
        ("rollback", 1, 3_600),
        ("copy", 1, 86_400),
        ("reboot", 1, 86_400),
    ];

    pub fn set(&mut self, key: &str, value: u64) {
        match key {
            "activation" => self.activation = Some(value),
            "lease" => self.lease = Some(value),
            "confirm" => self.confirm = Some(value),
            "rollback" => self.rollback = Some(value),
            "copy" => self.copy = Some(value),
            "reboot" => self.reboot = Some(value),
            _ => {}
        }
    }

    /// `self` over `base`, key by key (a host over the defaults, flags over
    /// the inventory).
    pub fn over(self, base: &TimeoutSettings) -> TimeoutSettings {
        TimeoutSettings {
            activation: self.activation.or(base.activation),
            lease: self.lease.or(base.lease),
            confirm: self.confirm.or(base.confirm),
            rollback: self.rollback.or(base.rollback),
            copy: self.copy.or(base.copy),
            reboot: self.reboot.or(base.reboot),
        }
    }
}

/// Pause between confirmation attempts over new connections.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often to look again while waiting on a host (its guard's verdict
/// after a trial, its return from a reboot).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// One short request to a host that may be in trouble (asking its guard to
/// roll back): failing fast matters more, as the lease is the fallback.
pub const QUICK_CALL: Duration = Duration::from_secs(5);
/// One look at a host over a fresh connection (inspecting a trial, reading
/// its boot state): a key exchange on a loaded host plus a few reads.
pub const LOOK_CALL: Duration = Duration::from_secs(10);
/// The guard's own steps around its bounded rollback: stopping the
/// activation (its unit's stop timeout, [`ACTIVATION_STOP`]), the grace
/// before a rollback past its limit is killed (5 s), and a poll or two.
pub const ROLLBACK_MARGIN: Duration = Duration::from_secs(15);
/// How long systemd waits for a stopped activation to exit before it kills
/// it.
pub const ACTIVATION_STOP: Duration = Duration::from_secs(5);
/// The most a confirmation's session spends persisting: installing a boot
/// loader can take a while, but a hung one must not hold the deploy up.
pub const PERSIST_AT_MOST: Duration = Duration::from_secs(120);

impl Timeouts {
    /// How often the lease keeper renews: every fifth of a lease, so four
    /// renewals can fail before the guard gives up.
    pub fn renew_every(&self) -> Duration {
        (self.lease / 5).max(Duration::from_millis(500))
    }

    /// How long one renewal may take: a slow answer still renews; only a
    /// host that cannot be reached for a whole lease is given up.
    pub fn renew_timeout(&self) -> Duration {
        (self.lease / 3).max(Duration::from_secs(2))
    }

    /// How long one confirmation attempt may take: a fresh connection and a
    /// few reads ([`LOOK_CALL`], at most `command`), plus persisting when it
    /// rides along in the same session.
    pub fn confirm_attempt(&self, persists: bool) -> Duration {
        let confirm = self.command.min(LOOK_CALL);
        if persists {
            confirm + self.activation.min(PERSIST_AT_MOST)
        } else {
            confirm
        }
    }

    /// How long tether waits, once it stopped renewing, for the guard to
    /// tell how the trial ended: the lease may have to lapse first, then the
    /// rollback runs within its limit.
    pub fn verdict_wait(&self) -> Duration {
        self.lease + self.rollback + ROLLBACK_MARGIN
    }

    /// The limits `settings` asks for (flags already over the inventory),
    /// tether's defaults for the rest.
    pub fn resolve(settings: &TimeoutSettings) -> Timeouts {
        let d = Timeouts::default();
        let pick =
            |secs: Option<u64>, default: Duration| secs.map(Duration::from_secs).unwrap_or(default);
        Timeouts {
            activation: pick(settings.activation, d.activation),
            lease: pick(settings.lease, d.lease),
            confirm: pick(settings.confirm, d.confirm),
            rollback: pick(settings.rollback, d.rollback),
            copy: pick(settings.copy, d.copy),
            command: d.command,
            reboot: pick(settings.reboot, d.reboot),
        }
    }
}
