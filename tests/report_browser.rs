//! The report as a person sees it: a tiny version of the quick pipeline runs in a temp dir, `wspace run`
//! names its report, and headless Chromium renders the page. A script injected into a copy of the page
//! checks, in the rendered DOM, that every image decoded, that every figure is a drawn SVG whose x and y
//! axis titles are laid out, and that the headline table is there and comes first.
//!
//! Chromium is Debian's `chromium` (`.ci/run` installs it). Without it the test prints why it is
//! skipped — except under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Project;

const TINY: &str = include_str!("pipelines/tiny-report.toml");

/// Runs in the page after it loaded; writes its findings as JSON into `<pre id="wspace-check">`.
const CHECK: &str = r#"<script>
window.addEventListener('load', () => {
  const out = { images: 0, broken: [], figures: 0, untitled: [], headline_rows: 0, headline_first: false };
  for (const img of document.images) {
    out.images++;
    if (!(img.complete && img.naturalWidth > 0)) out.broken.push(img.alt || img.src.slice(0, 80));
  }
  const laidOut = (svg, sel) => {
    const t = svg.querySelector(sel);
    return !!t && t.textContent.trim().length > 0 && t.getBBox().width > 0;
  };
  for (const f of document.querySelectorAll('figure')) {
    out.figures++;
    const svg = f.querySelector('svg');
    if (!svg || svg.getBoundingClientRect().width <= 0 || !laidOut(svg, '.x-title') || !laidOut(svg, '.y-title')) {
      out.untitled.push(f.id || f.textContent.slice(0, 60));
    }
  }
  const t = document.getElementById('headline-table');
  if (t) {
    out.headline_rows = t.rows.length;
    const first = document.querySelector('h2[id]:not(#headline h2)');
    out.headline_first = !!first && !!(t.compareDocumentPosition(first) & Node.DOCUMENT_POSITION_FOLLOWING);
  }
  const pre = document.createElement('pre');
  pre.id = 'wspace-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"#;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

fn dump_dom(browser: &Path, page: &Path, profile: &Path) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_quick_report_renders_in_a_real_browser_headline_first_with_titled_figures() {
    let Some(browser) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is not installed (CI installs it in .ci/run: apt-get install chromium)");
        }
        eprintln!("skipped: no chromium on PATH (apt-get install -y --no-install-recommends chromium)");
        return;
    };
    let p = Project::new();
    p.write("tiny.toml", TINY);
    let summary = p.run_json("tiny.toml", &[], 0);
    let report = summary.stage(0, "report");
    let document = PathBuf::from(report["document"].as_str().expect("the report stage names its document"));
    assert!(document.ends_with("report.html") && document.is_file(), "{document:?}");
    assert!(report["headline"]["sampled_accuracy"].is_number(), "{report}");

    // A text run names the report and its headline at the end.
    let out = p.wspace(&["run", "tiny.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("report: {}", document.display())), "{stdout}");
    assert!(stdout.contains("sampled_accuracy"), "{stdout}");

    let html = std::fs::read_to_string(&document).unwrap();
    let page = p.path("check.html");
    std::fs::write(&page, html.replace("</body>", &format!("{CHECK}</body>"))).unwrap();
    let dom = dump_dom(&browser, &page, &p.path("chromium-profile"));
    let json = dom
        .split_once("<pre id=\"wspace-check\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(j, _)| j.replace("&quot;", "\""))
        .unwrap_or_else(|| panic!("the check script left no result; the page did not load?\n{}", &dom[..dom.len().min(2000)]));
    let check: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(check["broken"], serde_json::json!([]), "broken images: {check}");
    assert_eq!(check["untitled"], serde_json::json!([]), "figures without drawn axis titles: {check}");
    assert!(check["figures"].as_u64().unwrap() >= 6, "at least six figures: {check}");
    assert_eq!(check["headline_rows"], 8, "header + 7 rows: {check}");
    assert_eq!(check["headline_first"], true, "the headline comes before the sections: {check}");
}
