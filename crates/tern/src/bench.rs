//! `tern bench`: runs load-generator scenarios against a broker; one JSON line per scenario
//! on stdout, a human summary on stderr.

use std::io::Write;

use anyhow::Context;

pub(crate) fn run(args: tern_bench::BenchArgs) -> anyhow::Result<()> {
    for &scenario in &args.scenarios {
        let report = tern_bench::run(&args, scenario)
            .with_context(|| format!("scenario {scenario:?} failed"))?;
        eprintln!("{}", report.summary());
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", report.to_json())?;
        out.flush()?;
    }
    Ok(())
}
