//! The runs that start no job: `--shellquote`, `--shuf`'s shuffle and `--dry-run`.

use super::*;

/// `--shellquote`: prints each job's arguments quoted for the shell, one job a line.
pub(super) fn shellquote(inputs: &mut Inputs) -> Result<u8, RunError> {
    let mut out = io::stdout().lock();
    for args in inputs.iter.by_ref() {
        let quoted: Vec<Vec<u8>> = args?
            .iter()
            .map(|a| crate::run::template::shell_quote(a))
            .collect();
        let mut line = quoted.join(&b' ');
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            break;
        }
    }
    Ok(0)
}

/// `--shuf`: every job, in a random order (Fisher–Yates, seeded from the system's randomness).
pub(super) fn shuffled(inputs: Inputs) -> Result<Inputs, RunError> {
    let mut rows: Vec<Args> = inputs.iter.collect::<Result<_, _>>()?;
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| RunError::System {
        what: "--shuf: no randomness from the system",
        source: io::Error::other(e.to_string()),
    })?;
    let mut state = u64::from_le_bytes(seed) | 1;
    for i in (1..rows.len()).rev() {
        // xorshift64*: plenty for an order of jobs.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        rows.swap(i, (r % (i as u64 + 1)) as usize);
    }
    Ok(Inputs {
        total: Some(rows.len() as u64),
        iter: Box::new(rows.into_iter().map(Ok)),
    })
}

pub(super) fn dry_run(config: &Config, feed: &mut Feed) -> Result<u8, RunError> {
    let mut out = io::stdout().lock();
    while let Some(job) = feed.next() {
        let (_, seq, args) = job?;
        let slot = ((seq - 1) % config.jobs as u64) as usize + 1;
        let Some(composed) = config
            .template
            .try_compose(&args, seq, slot)
            .map_err(RunError::Perl)?
        else {
            continue; // skip()
        };
        // Tagged as the job's output would be, as GNU parallel does.
        let mut line = tag(config, &args, seq, slot);
        line.extend_from_slice(&composed.display());
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            break; // stdout closed: nothing more to show
        }
    }
    Ok(0)
}
