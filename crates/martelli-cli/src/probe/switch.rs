//! Switch costs: one round trip between two threads, two processes, two async tasks.

use super::stats::{Stat, Unit, in_unit};
use super::{Ctx, ProbeError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Round-trip costs in µs: A wakes B, B wakes A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Switch {
    /// Two threads taking turns through a mutex and condition variable (a futex pair on Linux).
    pub(crate) thread_condvar: Stat,
    /// Two processes passing one byte back and forth through a pair of pipes.
    pub(crate) process_pipe: Stat,
    /// Two tokio tasks on one thread passing a message back and forth through channels.
    pub(crate) async_one_thread: Stat,
}

pub(crate) fn measure(ctx: &Ctx) -> Result<Switch, ProbeError> {
    let us = Unit::Micros;

    ctx.step("switch: threads");
    let k = ctx.pick(500, 4_000);
    let thread_condvar = ctx.measure("switch.thread_condvar", us, || thread_ping_pong(k))?;

    ctx.step("switch: processes");
    let mut echo = ctx.helper.spawn_piped("echo", &[])?;
    let k = ctx.pick(500, 4_000);
    let process_pipe = ctx.measure("switch.process_pipe", us, || {
        let start = Instant::now();
        let mut byte = [7u8; 1];
        for _ in 0..k {
            echo.stdin()?.write_all(&byte).map_err(ProbeError::Io)?;
            echo.stdout.read_exact(&mut byte).map_err(ProbeError::Io)?;
        }
        Ok::<_, ProbeError>(in_unit(start.elapsed(), us) / f64::from(k))
    })?;
    drop(echo);

    ctx.step("switch: async tasks");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(ProbeError::Runtime)?;
    let k = ctx.pick(20_000, 100_000);
    let async_one_thread = ctx.measure("switch.async_one_thread", us, || {
        rt.block_on(async_ping_pong(k))
    })?;

    Ok(Switch {
        thread_condvar,
        process_pipe,
        async_one_thread,
    })
}

/// The turn counter: even means the caller's turn, odd the partner's; `stop` ends the partner.
struct Turns {
    state: Mutex<(u64, bool)>,
    cv: Condvar,
}

fn thread_ping_pong(k: u32) -> Result<f64, ProbeError> {
    let turns = Arc::new(Turns {
        state: Mutex::new((0, false)),
        cv: Condvar::new(),
    });
    let partner = {
        let turns = Arc::clone(&turns);
        std::thread::Builder::new()
            .name("probe-pong".into())
            .spawn(move || {
                let mut s = turns.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    while s.0 % 2 == 0 && !s.1 {
                        s = turns.cv.wait(s).unwrap_or_else(|p| p.into_inner());
                    }
                    if s.1 {
                        return;
                    }
                    s.0 += 1;
                    turns.cv.notify_one();
                }
            })
            .map_err(|e| ProbeError::Limit(format!("cannot start a thread: {e}")))?
    };
    let start = Instant::now();
    {
        let mut s = turns.state.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..k {
            s.0 += 1;
            turns.cv.notify_one();
            while s.0 % 2 == 1 {
                s = turns.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
        s.1 = true;
        turns.cv.notify_one();
    }
    let elapsed = start.elapsed();
    partner
        .join()
        .map_err(|_| ProbeError::Measure("the ping-pong thread panicked".into()))?;
    Ok(in_unit(elapsed, Unit::Micros) / f64::from(k))
}

async fn async_ping_pong(k: u32) -> Result<f64, ProbeError> {
    let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u32>(1);
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u32>(1);
    let partner = tokio::spawn(async move {
        while let Some(n) = ping_rx.recv().await {
            if pong_tx.send(n).await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    for i in 0..k {
        ping_tx
            .send(i)
            .await
            .map_err(|_| ProbeError::Measure("the async partner stopped".into()))?;
        pong_rx
            .recv()
            .await
            .ok_or_else(|| ProbeError::Measure("the async partner stopped".into()))?;
    }
    let elapsed = start.elapsed();
    drop(ping_tx);
    let _ = partner.await;
    Ok(in_unit(elapsed, Unit::Micros) / f64::from(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ping_pong_completes() {
        let per_trip = thread_ping_pong(200).expect("ping-pong");
        assert!(per_trip > 0.0 && per_trip.is_finite());
    }

    #[test]
    fn async_ping_pong_completes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let per_trip = rt.block_on(async_ping_pong(200)).expect("ping-pong");
        assert!(per_trip > 0.0 && per_trip.is_finite());
    }
}
