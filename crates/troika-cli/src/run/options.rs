//! `-j`, `--halt` and `--timeout` in GNU parallel's forms.

use std::time::Duration;

use anyhow::{anyhow, bail};

/// The most jobs at once: each is a pool thread and about six file handles.
pub(crate) const MAX_JOBS: usize = 1024;

/// `-j`: `N`, `0` (as many as possible), `N%` of the cores, `+N` / `-N`
/// cores. `usize::MAX` stands for "as many as possible".
pub(crate) fn parse_jobs(text: &str, cores: usize) -> anyhow::Result<usize> {
    let bad = || anyhow!("-j '{text}': expected N, 0 (as many as possible), N%, +N or -N");
    let number = |digits: &str| -> anyhow::Result<u64> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse().map_err(|_| bad())
    };
    let cores_u64 = cores as u64;
    let jobs = if let Some(percent) = text.strip_suffix('%') {
        (number(percent)?.saturating_mul(cores_u64) / 100).max(1)
    } else if let Some(more) = text.strip_prefix('+') {
        cores_u64.saturating_add(number(more)?)
    } else if let Some(fewer) = text.strip_prefix('-') {
        cores_u64.saturating_sub(number(fewer)?).max(1)
    } else {
        match number(text)? {
            0 => return Ok(usize::MAX),
            n => n,
        }
    };
    Ok(usize::try_from(jobs).unwrap_or(usize::MAX))
}

/// How many jobs the file-handle limit allows (raised to its hard limit
/// first, as GNU parallel does), at most [`MAX_JOBS`].
pub(crate) fn job_limit() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
        limit = getrlimit(Resource::Nofile);
    }
    let handles = limit.current.unwrap_or(u64::MAX);
    let by_handles = usize::try_from(handles.saturating_sub(64) / 8).unwrap_or(usize::MAX);
    by_handles.clamp(1, MAX_JOBS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum When {
    /// Kill running jobs.
    Now,
    /// Start no new job; running ones finish.
    Soon,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    Fail,
    Success,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Threshold {
    Count(u64),
    /// A share of all jobs, in (0, 100].
    Percent(f64),
}

/// `--halt WHEN,COND=N[%]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Halt {
    pub(crate) when: When,
    pub(crate) cond: Cond,
    pub(crate) threshold: Threshold,
}

/// `None` for `never`.
pub(crate) fn parse_halt(text: &str) -> anyhow::Result<Option<Halt>> {
    if text == "never" {
        return Ok(None);
    }
    let bad = || {
        anyhow!(
            "--halt '{text}': expected never or WHEN,COND=N with WHEN now or soon, \
             COND fail, success or done, N ≥ 1 or a percentage in (0, 100]"
        )
    };
    let (when, rest) = text.split_once(',').ok_or_else(bad)?;
    let when = match when {
        "now" => When::Now,
        "soon" => When::Soon,
        _ => return Err(bad()),
    };
    let (cond, n) = rest.split_once('=').ok_or_else(bad)?;
    let cond = match cond {
        "fail" => Cond::Fail,
        "success" => Cond::Success,
        "done" => Cond::Done,
        _ => return Err(bad()),
    };
    let threshold = match n.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            Threshold::Percent(p)
        }
        None => match n.parse::<u64>() {
            Ok(n) if n > 0 => Threshold::Count(n),
            _ => return Err(bad()),
        },
    };
    Ok(Some(Halt {
        when,
        cond,
        threshold,
    }))
}

/// `--timeout SECS`; GNU parallel's `N%` (of the median runtime) is refused.
pub(crate) fn parse_timeout(text: &str) -> anyhow::Result<Duration> {
    if text.ends_with('%') {
        bail!(
            "--timeout '{text}': a percentage of the median runtime is not supported; \
             give seconds"
        );
    }
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => bail!("--timeout '{text}': expected a positive number of seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_take_gnu_forms() {
        assert_eq!(parse_jobs("3", 4).unwrap(), 3);
        assert_eq!(parse_jobs("0", 4).unwrap(), usize::MAX);
        assert_eq!(parse_jobs("50%", 4).unwrap(), 2);
        assert_eq!(parse_jobs("10%", 4).unwrap(), 1);
        assert_eq!(parse_jobs("+2", 4).unwrap(), 6);
        assert_eq!(parse_jobs("-1", 4).unwrap(), 3);
        assert_eq!(parse_jobs("-9", 4).unwrap(), 1);
        assert_eq!(parse_jobs("18446744073709551615", 4).unwrap(), usize::MAX);
        for bad in ["", "x", "1.5", "%", "+", "-x", "99999999999999999999999"] {
            assert!(parse_jobs(bad, 4).is_err(), "{bad}");
        }
    }

    #[test]
    fn halt_parses_gnu_parallel_forms() {
        assert_eq!(parse_halt("never").unwrap(), None);
        let halt = parse_halt("now,fail=1").unwrap().unwrap();
        assert_eq!(
            (halt.when, halt.cond, halt.threshold),
            (When::Now, Cond::Fail, Threshold::Count(1))
        );
        let halt = parse_halt("soon,success=30%").unwrap().unwrap();
        assert_eq!(
            (halt.when, halt.cond, halt.threshold),
            (When::Soon, Cond::Success, Threshold::Percent(30.0))
        );
        assert_eq!(parse_halt("soon,done=3").unwrap().unwrap().cond, Cond::Done);
        for bad in [
            "now",
            "later,fail=1",
            "now,fail=0",
            "soon,fail=x",
            "now,fail=0%",
            "now,fail=101%",
            "now,ok=1",
        ] {
            assert!(parse_halt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_are_seconds() {
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["0", "-1", "x", "inf", "NaN", "200%"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
