// The dashboard embeds Chart.js from npm (installed by `make dashboard`, from the committed
// package-lock.json): fail early with the fix, not with a missing-file error from include_bytes!.
fn main() {
    let chart = "dashboard/node_modules/chart.js/dist/chart.umd.min.js";
    println!("cargo:rerun-if-changed={chart}");
    println!("cargo:rerun-if-changed=dashboard/static");
    assert!(
        std::path::Path::new(chart).exists(),
        "{chart} is missing: run `make dashboard` (npm ci --prefix producer/dashboard) before building"
    );
}
