//! Spawning a child with its environment prepared once per server.
//!
//! The standard library's `Command` passes the parent's `environ` through untouched only
//! while no variable is set for the child; once one is (the request's variables, or
//! `TRACEPARENT`), it reads the whole environment of the server at that spawn, sorts it into
//! a map and makes a C string of each variable. The exec-server sets variables at nearly
//! every spawn, so on Linux it spawns with `posix_spawnp` itself: the server's environment
//! is read once, when the [`ExecServer`](crate::ExecServer) is made ([`Spawner::new`]), kept
//! as C strings, and each spawn builds only an array of pointers to them, leaving out the
//! names the request or the trace context set, and adds those. The server's environment is
//! therefore the one it had when it was made: a variable the server sets or removes later
//! does not reach its children.
//!
//! What the standard library and tokio would do is kept: the child's stdin, stdout and
//! stderr are pipes (the server's ends non-blocking and registered with tokio, close on
//! exec), `current_dir` applies in the child before the program is looked up, the signal
//! mask is emptied, the program is looked up in the
//! server's `PATH`, and a spawn error is the OS error. The child is waited for through a
//! pidfd (no `SIGCHLD` handler), reaped by [`Child::wait`], and killed and reaped when
//! dropped before that (`kill_on_drop`).
//!
//! Elsewhere (not Linux, no pidfd, or a request that sets `PATH` for a program named
//! without a `/`, which must be looked up in the child's `PATH`) the spawn goes through
//! `tokio::process::Command`, with the same environment.
//!
//! On both paths every signal's disposition is reset to its default in the child. A signal
//! the server ignores would otherwise stay ignored in every command it runs (exec keeps
//! `SIG_IGN`): a server started as a background job of a non-interactive shell ignores
//! `SIGINT` and `SIGQUIT`, one under `nohup` `SIGHUP`, and Rust ignores `SIGPIPE`; a
//! client's `signal` would then do nothing. Test: `tests/signals.rs`.
#![allow(unsafe_code)] // posix_spawn, pipe2, pidfd_open and waitpid are C functions.

use std::collections::HashMap;
use std::io;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncWrite};
use tracewire_context::{ENV_BAGGAGE, ENV_TRACEPARENT, ENV_TRACESTATE, TraceCarrier};

/// The trace variables for one child (`TRACEPARENT`, `TRACESTATE`, `BAGGAGE`, the
/// environment carrier's names); they win over the request's variables of the same name.
#[derive(Debug, Default)]
pub(crate) struct TraceVars<'a>(Vec<(&'static str, &'a str)>);

impl<'a> TraceVars<'a> {
    /// The variables for the context in `carrier` (its non-empty fields).
    pub(crate) fn from_carrier(carrier: &'a TraceCarrier) -> Self {
        let fields = [
            (ENV_TRACEPARENT, carrier.traceparent.as_str()),
            (ENV_TRACESTATE, carrier.tracestate.as_str()),
            (ENV_BAGGAGE, carrier.baggage.as_str()),
        ];
        Self(fields.into_iter().filter(|(_, v)| !v.is_empty()).collect())
    }
}

/// What to run.
pub(crate) struct SpawnRequest<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a HashMap<String, String>,
    /// Empty: the server's working directory.
    pub(crate) cwd: &'a str,
    pub(crate) trace: &'a TraceVars<'a>,
}

/// Spawns children; holds the server's environment, prepared once.
#[derive(Debug)]
pub(crate) struct Spawner {
    #[cfg(target_os = "linux")]
    fast: Option<linux::BaseEnv>,
}

impl Spawner {
    /// Reads the server's environment (once) and checks that this kernel has pidfds.
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            fast: linux::pidfd_supported().then(linux::BaseEnv::capture),
        }
    }

    /// Spawns `req` with piped stdin, stdout and stderr.
    pub(crate) fn spawn(&self, req: &SpawnRequest<'_>) -> io::Result<Child> {
        #[cfg(target_os = "linux")]
        if let Some(base) = &self.fast {
            let path_lookup_in_child =
                req.env.contains_key("PATH") && req.argv.first().is_some_and(|p| !p.contains('/'));
            if !path_lookup_in_child {
                return linux::spawn(base, req).map(Child::Spawned);
            }
        }
        spawn_tokio(req).map(Child::Tokio)
    }
}

fn spawn_tokio(req: &SpawnRequest<'_>) -> io::Result<tokio::process::Child> {
    let Some(program) = req.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "argv is empty"));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&req.argv[1..])
        .envs(req.env)
        .envs(req.trace.0.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !req.cwd.is_empty() {
        cmd.current_dir(req.cwd);
    }
    #[cfg(unix)]
    // SAFETY: between fork and exec the closure calls only `signal`, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            default_signal_dispositions();
            Ok(())
        });
    }
    cmd.spawn()
}

/// Every standard signal's disposition (1 to 31) back to its default (`SIGKILL` and
/// `SIGSTOP` cannot be changed and are left out); async-signal-safe.
#[cfg(unix)]
fn default_signal_dispositions() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: `signal` with `SIG_DFL` has no preconditions; its error for a
            // number the OS reserves is of no consequence here.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// A spawned child.
#[derive(Debug)]
pub(crate) enum Child {
    Tokio(tokio::process::Child),
    #[cfg(target_os = "linux")]
    Spawned(linux::Child),
}

/// The server's end of the child's stdin.
pub(crate) type Stdin = Box<dyn AsyncWrite + Send + Unpin>;
/// The server's end of the child's stdout or stderr.
pub(crate) type Output = Box<dyn AsyncRead + Send + Unpin>;

impl Child {
    /// The OS pid (0 once a tokio child was reaped).
    pub(crate) fn id(&self) -> u32 {
        match self {
            Self::Tokio(c) => c.id().unwrap_or(0),
            #[cfg(target_os = "linux")]
            Self::Spawned(c) => c.id(),
        }
    }

    pub(crate) fn take_stdin(&mut self) -> Option<Stdin> {
        match self {
            Self::Tokio(c) => c.stdin.take().map(|p| Box::new(p) as Stdin),
            #[cfg(target_os = "linux")]
            Self::Spawned(c) => c.stdin.take().map(|p| Box::new(p) as Stdin),
        }
    }

    pub(crate) fn take_stdout(&mut self) -> Option<Output> {
        match self {
            Self::Tokio(c) => c.stdout.take().map(|p| Box::new(p) as Output),
            #[cfg(target_os = "linux")]
            Self::Spawned(c) => c.stdout.take().map(|p| Box::new(p) as Output),
        }
    }

    pub(crate) fn take_stderr(&mut self) -> Option<Output> {
        match self {
            Self::Tokio(c) => c.stderr.take().map(|p| Box::new(p) as Output),
            #[cfg(target_os = "linux")]
            Self::Spawned(c) => c.stderr.take().map(|p| Box::new(p) as Output),
        }
    }

    /// Waits for the child to exit and reaps it. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Tokio(c) => c.wait().await,
            #[cfg(target_os = "linux")]
            Self::Spawned(c) => c.wait().await,
        }
    }

    /// Sends `SIGKILL` unless the child was already reaped.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match self {
            Self::Tokio(c) => c.start_kill(),
            #[cfg(target_os = "linux")]
            Self::Spawned(c) => c.start_kill(),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::{CString, OsString};
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::ptr;

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    use tokio::net::unix::pipe;

    use super::SpawnRequest;

    fn nul_error() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data")
    }

    fn cstring(s: impl Into<Vec<u8>>) -> io::Result<CString> {
        CString::new(s).map_err(|_| nul_error())
    }

    fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
        if r == -1 { Err(io::Error::last_os_error()) } else { Ok(r) }
    }

    /// The server's environment as `NAME=value` C strings, each with its name's length;
    /// sorted by name, one entry per name (as the standard library passes it).
    #[derive(Debug)]
    pub(super) struct BaseEnv {
        vars: Vec<(usize, CString)>,
    }

    impl BaseEnv {
        pub(super) fn capture() -> Self {
            let map: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
            let vars = map
                .into_iter()
                .filter_map(|(k, v)| {
                    let (mut k, v) = (k.into_vec(), v.into_vec());
                    let name_len = k.len();
                    k.reserve_exact(v.len() + 2);
                    k.push(b'=');
                    k.extend_from_slice(&v);
                    CString::new(k).ok().map(|c| (name_len, c))
                })
                .collect();
            Self { vars }
        }
    }

    /// Whether `pidfd_open` works here (Linux 5.3 and later, unless a seccomp filter
    /// refuses it).
    pub(super) fn pidfd_supported() -> bool {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        pidfd_open(me).is_ok()
    }

    fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A pipe, both ends close-on-exec; the server's end non-blocking, the child's
    /// blocking and above 2 (so that `dup2` onto 0, 1 or 2 always makes a copy, which
    /// clears close-on-exec).
    fn pipe_pair(child_reads: bool) -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid array of two descriptors for pipe2 to fill.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 succeeded: both descriptors are new and owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (ours, theirs) = if child_reads { (w, r) } else { (r, w) };
        let theirs = if theirs.as_raw_fd() <= 2 {
            // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one or -1.
            let fd = cvt(unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
            // SAFETY: fcntl just made this descriptor; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        } else {
            theirs
        };
        // SAFETY: F_SETFL on an open descriptor; 0 clears O_NONBLOCK (the access mode is
        // not changed by F_SETFL).
        cvt(unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFL, 0) })?;
        Ok((ours, theirs))
    }

    /// `posix_spawn_file_actions_t`, destroyed on drop.
    struct FileActions(MaybeUninit<libc::posix_spawn_file_actions_t>);

    impl FileActions {
        fn new() -> io::Result<Self> {
            let mut fa = Self(MaybeUninit::uninit());
            // SAFETY: init on uninitialised storage is how the object is made.
            let r = unsafe { libc::posix_spawn_file_actions_init(fa.0.as_mut_ptr()) };
            if r != 0 {
                // Not initialised: forget it so that Drop does not destroy it.
                std::mem::forget(fa);
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(fa)
        }

        fn as_mut_ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
            self.0.as_mut_ptr()
        }

        fn dup2(&mut self, fd: &OwnedFd, to: RawFd) -> io::Result<()> {
            // SAFETY: the object is initialised (new); fd stays open until the spawn.
            spawn_result(unsafe { libc::posix_spawn_file_actions_adddup2(self.as_mut_ptr(), fd.as_raw_fd(), to) })
        }

        fn chdir(&mut self, dir: &CString) -> io::Result<()> {
            // SAFETY: the object is initialised; glibc copies the path.
            spawn_result(unsafe { libc::posix_spawn_file_actions_addchdir_np(self.as_mut_ptr(), dir.as_ptr()) })
        }
    }

    impl Drop for FileActions {
        fn drop(&mut self) {
            // SAFETY: initialised in new, destroyed once here.
            unsafe { libc::posix_spawn_file_actions_destroy(self.as_mut_ptr()) };
        }
    }

    /// `posix_spawnattr_t`, destroyed on drop.
    struct Attr(MaybeUninit<libc::posix_spawnattr_t>);

    impl Attr {
        /// An empty signal mask and every signal's disposition back to its default (the
        /// module documentation says why).
        fn standard() -> io::Result<Self> {
            let mut a = Self(MaybeUninit::uninit());
            // SAFETY: init on uninitialised storage is how the object is made.
            let r = unsafe { libc::posix_spawnattr_init(a.0.as_mut_ptr()) };
            if r != 0 {
                std::mem::forget(a);
                return Err(io::Error::from_raw_os_error(r));
            }
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: sigemptyset initialises the set; the attribute object is initialised
            // and copies the sets; the flags are the two the sets need.
            unsafe {
                cvt(libc::sigemptyset(set.as_mut_ptr()))?;
                spawn_result(libc::posix_spawnattr_setsigmask(a.0.as_mut_ptr(), set.as_ptr()))?;
                // glibc's full set leaves out the signals it keeps for itself.
                cvt(libc::sigfillset(set.as_mut_ptr()))?;
                spawn_result(libc::posix_spawnattr_setsigdefault(a.0.as_mut_ptr(), set.as_ptr()))?;
                #[allow(clippy::cast_possible_truncation)] // the flags fit in a short
                let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
                spawn_result(libc::posix_spawnattr_setflags(a.0.as_mut_ptr(), flags))?;
            }
            Ok(a)
        }
    }

    impl Drop for Attr {
        fn drop(&mut self) {
            // SAFETY: initialised in standard, destroyed once here.
            unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
        }
    }

    /// posix_spawn functions return the error number instead of setting errno.
    fn spawn_result(r: libc::c_int) -> io::Result<()> {
        if r == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(r)) }
    }

    pub(super) fn spawn(base: &BaseEnv, req: &SpawnRequest<'_>) -> io::Result<Child> {
        let Some(program) = req.argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "argv is empty"));
        };
        let program = cstring(program.as_str())?;
        let args = req.argv[1..].iter().map(|a| cstring(a.as_str())).collect::<io::Result<Vec<_>>>()?;
        let mut argv: Vec<*const libc::c_char> = Vec::with_capacity(args.len() + 2);
        argv.push(program.as_ptr());
        argv.extend(args.iter().map(|a| a.as_ptr()));
        argv.push(ptr::null());

        // The request's variables, then the trace variables: a later one of a name wins.
        let mut set: Vec<(usize, CString)> = Vec::with_capacity(req.env.len() + req.trace.0.len());
        let request = req.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        for (k, v) in request.chain(req.trace.0.iter().copied()) {
            let entry = cstring(format!("{k}={v}"))?;
            set.retain(|(n, e)| e.as_bytes()[..*n] != *k.as_bytes());
            set.push((k.len(), entry));
        }
        let named = |entry: &(usize, CString), name: &[u8]| entry.1.as_bytes()[..entry.0] == *name;
        let mut envp: Vec<*const libc::c_char> = Vec::with_capacity(base.vars.len() + set.len() + 1);
        envp.extend(
            base.vars.iter().filter(|b| !set.iter().any(|s| named(b, &s.1.as_bytes()[..s.0]))).map(|(_, c)| c.as_ptr()),
        );
        envp.extend(set.iter().map(|(_, c)| c.as_ptr()));
        envp.push(ptr::null());

        let cwd = if req.cwd.is_empty() { None } else { Some(cstring(req.cwd)?) };

        let (stdin, child_stdin) = pipe_pair(true)?;
        let (stdout, child_stdout) = pipe_pair(false)?;
        let (stderr, child_stderr) = pipe_pair(false)?;
        let mut actions = FileActions::new()?;
        actions.dup2(&child_stdin, 0)?;
        actions.dup2(&child_stdout, 1)?;
        actions.dup2(&child_stderr, 2)?;
        if let Some(dir) = &cwd {
            actions.chdir(dir)?;
        }
        let mut attr = Attr::standard()?;

        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: the program, argv and envp strings are
        // owned above and outlive it, argv and envp end with a null pointer, the file
        // actions and attributes are initialised, and the descriptors they name are open.
        spawn_result(unsafe {
            libc::posix_spawnp(
                &raw mut pid,
                program.as_ptr(),
                actions.as_mut_ptr(),
                attr.0.as_mut_ptr(),
                argv.as_ptr().cast::<*mut libc::c_char>(),
                envp.as_ptr().cast::<*mut libc::c_char>(),
            )
        })?;
        drop((child_stdin, child_stdout, child_stderr));

        // The child is ours until reaped: its pid cannot be reused before that.
        let pidfd = match pidfd_open(pid).and_then(|fd| {
            // SAFETY: the AsyncFd owns the descriptor, which stays open (and the same) until
            // the AsyncFd is dropped.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
        }) {
            Ok(fd) => fd,
            Err(e) => {
                kill_and_reap(pid);
                return Err(e);
            }
        };
        let mut child = Child { pid, pidfd, status: None, stdin: None, stdout: None, stderr: None };
        child.stdin = Some(pipe::Sender::from_owned_fd_unchecked(stdin)?);
        child.stdout = Some(pipe::Receiver::from_owned_fd_unchecked(stdout)?);
        child.stderr = Some(pipe::Receiver::from_owned_fd_unchecked(stderr)?);
        Ok(child)
    }

    /// SIGKILL, then a blocking reap (the child dies at once).
    fn kill_and_reap(pid: libc::pid_t) {
        // SAFETY: pid is our unreaped child, so it names that process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = waitpid(pid, 0);
    }

    /// `waitpid(pid, flags)`: `Some` once the child was reaped.
    fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: status is a valid out-parameter; pid is our child.
            let r = unsafe { libc::waitpid(pid, &raw mut status, flags) };
            match r {
                0 => return Ok(None),
                -1 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                _ => return Ok(Some(ExitStatus::from_raw(status))),
            }
        }
    }

    /// A child spawned here: waited for through its pidfd.
    #[derive(Debug)]
    pub(crate) struct Child {
        pid: libc::pid_t,
        pidfd: AsyncFd<OwnedFd>,
        /// Set once reaped: the pid may then name another process.
        status: Option<ExitStatus>,
        pub(super) stdin: Option<pipe::Sender>,
        pub(super) stdout: Option<pipe::Receiver>,
        pub(super) stderr: Option<pipe::Receiver>,
    }

    impl Child {
        fn raw_pid(&self) -> libc::pid_t {
            self.pid
        }

        /// The pid (positive: posix_spawn made it).
        pub(super) fn id(&self) -> u32 {
            u32::try_from(self.pid).unwrap_or(0)
        }

        pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
            if let Some(s) = self.status {
                return Ok(s);
            }
            loop {
                // The pidfd is readable once the child has exited.
                let mut ready = self.pidfd.readable().await?;
                if let Some(s) = waitpid(self.raw_pid(), libc::WNOHANG)? {
                    self.status = Some(s);
                    return Ok(s);
                }
                ready.clear_ready();
            }
        }

        pub(super) fn start_kill(&mut self) -> io::Result<()> {
            if self.status.is_some() {
                return Ok(());
            }
            // SAFETY: not reaped yet, so the pid still names our child (a zombie at worst).
            cvt(unsafe { libc::kill(self.raw_pid(), libc::SIGKILL) }).map(drop)
        }
    }

    impl Drop for Child {
        /// Not reaped yet: killed, and reaped on a thread of its own when it has not died
        /// by the time of the first look (as tokio's `kill_on_drop` leaves it to its reaper).
        fn drop(&mut self) {
            if self.status.is_some() {
                return;
            }
            let _ = self.start_kill();
            if let Ok(Some(_)) = waitpid(self.raw_pid(), libc::WNOHANG) {
                return;
            }
            let pid = self.raw_pid();
            let _ = std::thread::Builder::new().name("tracewire-reap".into()).spawn(move || waitpid(pid, 0));
        }
    }
}
