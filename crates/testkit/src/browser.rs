//! Headless Debian `chromium` (installed by `scripts/setup-test-deps.sh`): screenshots and
//! the DOM after scripts ran, for tests of tracewire's HTML pages.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;

/// The browser: `TRACEWIRE_CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TRACEWIRE_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from("/usr/bin/chromium");
    if p.exists() {
        Ok(p)
    } else {
        Err("/usr/bin/chromium missing; run ./scripts/setup-test-deps.sh (installs Debian's chromium)".into())
    }
}

/// Runs headless chromium with `args` then `url`, in a fresh profile, killing it (by its own
/// pid) after `timeout`. Returns stdout.
fn run(args: &[String], url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let profile = TempDir::new("tw-chromium").map_err(|e| e.to_string())?;
    let out_file = profile.path().join("stdout");
    let stdout = std::fs::File::create(&out_file).map_err(|e| e.to_string())?;
    let mut child = Command::new(chromium()?)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start chromium: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => return Err(format!("chromium exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("chromium did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
    std::fs::read(&out_file).map_err(|e| e.to_string())
}

/// Loads `url`, lets its scripts run for `virtual_ms` of virtual time (timers fire; a page
/// polling every 2 s refreshes once in 2500 ms), and returns the serialized DOM.
pub fn dump_dom(url: &str, virtual_ms: u64) -> Result<String, String> {
    let out = run(&["--dump-dom".into(), format!("--virtual-time-budget={virtual_ms}")], url, Duration::from_secs(60))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// How long `page` (a local HTML file) takes to load in chromium, in milliseconds: from the
/// moment a wrapper page points an iframe (1200 x 900) at it to the iframe's `load` event,
/// then a forced layout of the loaded document (reading its `scrollHeight`), so parsing,
/// style and layout are counted; chromium's own start is not. The wrapper lives in a
/// temporary directory and reaches the page by its `file://` URL
/// (`--allow-file-access-from-files`).
///
/// # Errors
/// Chromium missing or failing, or the page not loading within 60 s.
pub fn load_ms(page: &Path) -> Result<f64, String> {
    let page = page.canonicalize().map_err(|e| format!("{}: {e}", page.display()))?;
    let dir = TempDir::new("tw-load").map_err(|e| e.to_string())?;
    let wrapper = dir.path().join("load.html");
    // Percent-encoded, so the URL is safe inside the script's string literal.
    let mut src = String::from("file://");
    for b in page.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(b) {
            src.push(char::from(*b));
        } else {
            let _ = write!(src, "%{b:02X}");
        }
    }
    std::fs::write(
        &wrapper,
        format!(
            r#"<!doctype html><html><body><p id="load-ms">pending</p>
<iframe id="page" style="width:1200px;height:900px"></iframe>
<script>
const t0 = performance.now();
const f = document.getElementById("page");
f.onload = () => {{
  const d = f.contentDocument;
  const height = d ? d.documentElement.scrollHeight : -1;
  document.getElementById("load-ms").textContent = height < 0 ? "unreadable" : (performance.now() - t0).toFixed(3);
}};
f.src = "{src}";
</script></body></html>"#
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = run(
        &["--dump-dom".into(), "--allow-file-access-from-files".into()],
        &format!("file://{}", wrapper.display()),
        Duration::from_secs(60),
    )?;
    let dom = String::from_utf8_lossy(&out);
    let text = dom
        .split(r#"<p id="load-ms">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .ok_or_else(|| "chromium's DOM has no load-ms element".to_owned())?;
    text.parse().map_err(|_| format!("the page did not load: {text}"))
}

/// Takes a `width` x `height` screenshot of `url` (after `virtual_ms` of virtual time) into `png`.
pub fn screenshot(url: &str, png: &Path, width: u32, height: u32, virtual_ms: u64) -> Result<(), String> {
    run(
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            format!("--virtual-time-budget={virtual_ms}"),
        ],
        url,
        Duration::from_secs(60),
    )?;
    if png.exists() { Ok(()) } else { Err(format!("chromium wrote no screenshot at {}", png.display())) }
}

/// What a screenshot holds, for "it is not blank" checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelStats {
    /// Width and height.
    pub size: (u32, u32),
    /// Distinct RGB colours.
    pub colours: usize,
    /// The share of pixels that differ from the most common colour (the background).
    pub ink: f64,
}

/// A decoded image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Width and height.
    pub size: (u32, u32),
    /// Pixels as RGB, row by row.
    pub rgb: Vec<[u8; 3]>,
}

/// Decodes a PNG.
pub fn pixels(png_path: &Path) -> Result<Image, String> {
    let file = std::fs::File::open(png_path).map_err(|e| e.to_string())?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| if channels >= 3 { [px[0], px[1], px[2]] } else { [px[0], px[0], px[0]] })
        .collect();
    Ok(Image { size: (info.width, info.height), rgb })
}

/// Decodes a PNG and counts its colours and the share of non-background pixels.
pub fn pixel_stats(png_path: &Path) -> Result<PixelStats, String> {
    let Image { size, rgb } = pixels(png_path)?;
    let mut counts: std::collections::HashMap<[u8; 3], u64> = std::collections::HashMap::new();
    for px in rgb {
        *counts.entry(px).or_default() += 1;
    }
    let total: u64 = counts.values().sum();
    let background = counts.values().copied().max().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let ink = if total == 0 { 0.0 } else { (total - background) as f64 / total as f64 };
    Ok(PixelStats { size, colours: counts.len(), ink })
}
