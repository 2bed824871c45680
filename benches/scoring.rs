//! Throughput of the pure scoring model, in signals scored per second: one
//! contact with 10 and with 1,000 signals, a batch of 10,000 contacts with
//! 10 signals each, and the log-scaled form that keeps scores current.
//!
//! `cargo bench --bench scoring`. Inputs are built before timing starts;
//! each timed call clones the inputs of a contact (cheap: the reference
//! signal kinds are borrowed) and scores them with the reference model.
//! Ages are spread over 0–90 days, so about a third of the signals are past
//! the two-half-life cutoff.

use std::{hint::black_box, time::Duration};

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crm_core::{
    domain::{SignalKind, Timestamp},
    scoring::{ScoringInput, ScoringModel},
};

const KINDS: [SignalKind; 8] = [
    SignalKind::EMAIL_OPEN,
    SignalKind::EMAIL_CLICK,
    SignalKind::PAGE_VIEW,
    SignalKind::PRICING_PAGE_VIEW,
    SignalKind::DEMO_REQUEST,
    SignalKind::MEETING_BOOKED,
    SignalKind::FORM_SUBMIT,
    SignalKind::DEAL_EXISTS,
];

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// `n` signals of varied kinds and ages, the same on every run.
fn signals(seed: u64, n: usize) -> Vec<ScoringInput> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let kind = KINDS[(state >> 33) as usize % KINDS.len()].clone();
            let age_seconds = (state >> 20) % (90 * 86_400);
            ScoringInput::new(kind, now() - chrono::Duration::seconds(age_seconds as i64))
        })
        .collect()
}

fn one_contact(c: &mut Criterion) {
    let model = ScoringModel::default();
    let mut group = c.benchmark_group("scoring/one_contact");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for n in [10usize, 1_000] {
        let inputs = signals(n as u64, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("signals", n), &inputs, |b, inputs| {
            b.iter(|| model.score(black_box(now()), black_box(inputs).iter().cloned()))
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    const CONTACTS: usize = 10_000;
    const PER_CONTACT: usize = 10;
    let model = ScoringModel::default();
    let contacts: Vec<Vec<ScoringInput>> = (0..CONTACTS)
        .map(|i| signals(i as u64, PER_CONTACT))
        .collect();
    let mut group = c.benchmark_group("scoring/batch");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements((CONTACTS * PER_CONTACT) as u64));
    group.bench_function("10000_contacts_x_10_signals", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for inputs in black_box(&contacts) {
                total += u64::from(model.score(now(), inputs.iter().cloned()).score.get());
            }
            total
        })
    });
    group.finish();
}

fn log_form(c: &mut Criterion) {
    let model = ScoringModel::default();
    let inputs = signals(7, 1_000);
    let mut group = c.benchmark_group("scoring/log_form");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("accumulate_1000_signals_and_read", |b| {
        b.iter(|| {
            let sum = black_box(&inputs).iter().fold(None, |acc, i| {
                match model.log_term(&i.kind, i.occurred_at) {
                    Some(term) => Some(ScoringModel::log_add(acc, term)),
                    None => acc,
                }
            });
            model.score_from_log(sum, black_box(now()))
        })
    });
    group.finish();
}

criterion_group!(benches, one_contact, batch, log_form);
criterion_main!(benches);
