//! The headless-browser helpers against a page whose content is known.

use tracewire_testkit::TempDir;
use tracewire_testkit::browser::{dump_dom, load_ms, pixel_stats, screenshot};

#[test]
fn renders_runs_timers_and_screenshots() {
    let dir = TempDir::new("tw-browser").unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        r#"<!doctype html><html><body style="background:#fff;margin:0">
<div id="box" style="width:200px;height:100px;background:#c00"></div><p id="n">0</p>
<script>let n = 0; setInterval(() => { n += 1; document.getElementById('n').textContent = String(n); }, 2000);</script>
</body></html>"#,
    )
    .unwrap();
    let url = format!("file://{}", page.display());
    // Virtual time: one 2 s tick has fired after 2.5 s, not two.
    let dom = dump_dom(&url, 2500).unwrap();
    assert!(dom.contains(r#"<p id="n">1</p>"#), "{dom}");
    let png = dir.path().join("shot.png");
    screenshot(&url, &png, 400, 300, 100).unwrap();
    let stats = pixel_stats(&png).unwrap();
    assert_eq!(stats.size, (400, 300));
    // The red box is 200x100 of 400x300: a sixth of the pixels.
    assert!((stats.ink - 1.0 / 6.0).abs() < 0.03, "{stats:?}");
    // A blank page has one colour and no ink.
    std::fs::write(&page, "<!doctype html><body style='background:#fff'></body>").unwrap();
    screenshot(&url, &png, 400, 300, 100).unwrap();
    let blank = pixel_stats(&png).unwrap();
    assert_eq!((blank.colours, blank.ink), (1, 0.0), "{blank:?}");
}

#[test]
fn load_time_counts_the_pages_own_work() {
    let dir = TempDir::new("tw-browser-load").unwrap();
    // A name that needs percent-encoding in the wrapper's URL.
    let page = dir.path().join("a page's \"name\".html");
    // The page's script spins 300 ms before the document finishes loading: the figure
    // cannot be smaller than that.
    std::fs::write(
        &page,
        r"<!doctype html><html><body><p>slow</p>
<script>const end = performance.now() + 300; while (performance.now() < end) {}</script>
</body></html>",
    )
    .unwrap();
    let ms = load_ms(&page).unwrap();
    assert!(ms >= 300.0 && ms.is_finite(), "{ms}");
    assert!(load_ms(&dir.path().join("missing.html")).is_err());
}
