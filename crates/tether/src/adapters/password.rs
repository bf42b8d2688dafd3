//! Reading a password: from the terminal with echo off, or the first line
//! of stdin when stdin is not a terminal (scripts, tests). Written here
//! because the one line of termios it needs does not justify a crate; the
//! terminal's settings are put back even when reading fails.

use std::io::{BufRead, IsTerminal, Write};

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};

/// Asks with `prompt` (on the terminal) and returns the line without its
/// line break.
pub fn ask(prompt: &str) -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let read = (|| {
        let mut out = &tty;
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        Ok::<String, std::io::Error>(line)
    })();
    let restored = tcsetattr(&tty, SetArg::TCSANOW, &saved).map_err(std::io::Error::from);
    let line = read?;
    restored?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
