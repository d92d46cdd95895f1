//! The evaluation report (Markdown) and the error analysis, written by the harness.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use belink_core::decision::near_tie;

use crate::configs::UNGATED_RERANKING;
use crate::evaluate::{
    file_name, percentiles, DatasetResult, ErrorCause, NormalizationRun, RerankedAnswer, RerankerChoice, SweepRun,
};
use crate::linking::{score_cells, SCORE_HEADER};
use crate::protocol::Protocol;

/// A published accuracy@1, for the table our numbers stand next to.
pub struct Published {
    pub system: &'static str,
    pub dataset: &'static str,
    pub protocol: Protocol,
    pub accuracy: f64,
    pub source: &'static str,
}

/// Published test-set accuracies@1 (each checked against its source, cited in the table).
pub const PUBLISHED: &[Published] = &[
    Published {
        system: "BioSyn (BioBERT)",
        dataset: "NCBI-disease",
        protocol: Protocol::Classic,
        accuracy: 91.1,
        source: "dmis-lab/BioSyn README, trained models (Acc@1/@5 91.1/93.9)",
    },
    Published {
        system: "BioSyn (initialised from SapBERT)",
        dataset: "NCBI-disease",
        protocol: Protocol::Classic,
        accuracy: 92.4,
        source: "dmis-lab/BioSyn README, trained models (92.4/95.8)",
    },
    Published {
        system: "SapBERT",
        dataset: "NCBI-disease",
        protocol: Protocol::Classic,
        accuracy: 92.3,
        source:
            "as reported in the ANGEL paper's comparison table (secondary: SapBERT's own repository gives no figure)",
    },
    Published {
        system: "ANGEL",
        dataset: "NCBI-disease",
        protocol: Protocol::Classic,
        accuracy: 92.8,
        source: "dmis-lab/ANGEL README, best scores (92.8/95.7; GenBioEL's preprocessing)",
    },
    Published {
        system: "BioSyn (BioBERT)",
        dataset: "BC5CDR-disease",
        protocol: Protocol::Classic,
        accuracy: 93.2,
        source: "dmis-lab/BioSyn README, trained models (93.2/96.0)",
    },
    Published {
        system: "BioSyn (initialised from SapBERT)",
        dataset: "BC5CDR-disease",
        protocol: Protocol::Classic,
        accuracy: 93.5,
        source: "dmis-lab/BioSyn README, trained models (93.5/96.4)",
    },
    Published {
        system: "BELHD",
        dataset: "NCBI-disease",
        protocol: Protocol::Strict,
        accuracy: 87.6,
        source: "recomputed from sg-wbi/belhd's stored predictions with its scripts/evaluate.py (strict)",
    },
    Published {
        system: "GenBioEL",
        dataset: "NCBI-disease",
        protocol: Protocol::Strict,
        accuracy: 82.7,
        source: "recomputed from sg-wbi/belhd (same files as sg-wbi/belb-exp), strict",
    },
    Published {
        system: "arboEL",
        dataset: "NCBI-disease",
        protocol: Protocol::Strict,
        accuracy: 80.0,
        source: "recomputed from sg-wbi/belhd (same files as sg-wbi/belb-exp), strict",
    },
    Published {
        system: "BELHD",
        dataset: "BC5CDR-disease",
        protocol: Protocol::Strict,
        accuracy: 89.2,
        source: "recomputed from sg-wbi/belhd's stored predictions, strict",
    },
    Published {
        system: "GenBioEL",
        dataset: "BC5CDR-disease",
        protocol: Protocol::Strict,
        accuracy: 88.3,
        source: "recomputed from sg-wbi/belhd (same files as sg-wbi/belb-exp), strict",
    },
];

/// Where the run happened, for the report's header.
pub struct RunInfo {
    pub command: String,
    pub machine: String,
    pub server: String,
    pub date: String,
    pub commit: String,
}

pub fn report(info: &RunInfo, reranker: &RerankerChoice, results: &[DatasetResult]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# BeLink evaluation report\n");
    let _ = writeln!(w, "Written by `belink-eval evaluate` (run it with `make eval`). Do not edit by hand.\n");
    let _ = writeln!(w, "- date: {}\n- commit: {}\n- command: `{}`", info.date, info.commit, info.command);
    let _ = writeln!(w, "- machine: {}\n- server: {}", info.machine, info.server);
    let _ = writeln!(w, "- re-ranker: {}\n", reranker.describe());

    let _ = writeln!(w, "## Datasets\n");
    let _ = writeln!(
        w,
        "| dataset | corpus file | documents | gold mentions | ontology | ontology load (s) | belink_index (s) | training names added |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.spec.name,
            file_name(&r.spec.corpus),
            r.documents,
            r.mentions,
            r.spec.ontology,
            r.load_seconds.map(|s| format!("{s:.2}")).unwrap_or_else(|| "(preloaded)".into()),
            r.index_seconds.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into()),
            r.training_names_added.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        );
    }

    if results.iter().any(|r| r.fusion.is_some()) {
        let _ = writeln!(w, "\n## Fusion weights (belink_tune_fusion on the training split)\n");
        let _ = writeln!(
            w,
            "Chosen on the training split's mentions (one gold id known to the ontology), before they are added \
             as names; acc@1 on those mentions (classic, hybrid retrieval without re-ranking). The dev figures \
             below use these weights (*hybrid*) or equal weights (*hybrid, equal weights*). Datasets without a \
             training split keep equal weights.\n"
        );
        let _ = writeln!(
            w,
            "| dataset | examples | reachable | exact alone | trigram alone | dense alone | equal weights | tuned | weights (exact, trigram, dense) |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        let tunings =
            results.iter().flat_map(|r| [(r, "", &r.fusion), (r, " (adapted encoder)", &r.adapted_fusion)].into_iter());
        for (r, label, tuning) in tunings {
            if let Some(f) = tuning {
                let _ = writeln!(
                    w,
                    "| {}{label} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {}, {}, {} |",
                    r.spec.name,
                    f.examples,
                    f.reachable,
                    f.exact,
                    f.trigram,
                    f.dense,
                    f.equal_weights,
                    f.tuned,
                    f.weights[0],
                    f.weights[1],
                    f.weights[2],
                );
            }
        }
    }

    if results.iter().any(|r| !r.adaptations.is_empty()) {
        let _ = writeln!(w, "\n## Encoder adaptation (belink_adapt_encoder)\n");
        let _ = writeln!(
            w,
            "The configured encoder adapted to the ontology's names (synonyms of a concept pulled together, \
             multi-similarity loss, random batches of 64 concepts x 4 names; one epoch, seed 42), then the names \
             re-embedded and the ontology switched to it. *ontology + training mentions*: a second adaptation \
             from the configured encoder, with the training split's mentions added as names (BioSyn's \
             setting). Loss: the last steps' training loss, on the training names. The dev figures are \
             under *Normalization*, dictionary *…, adapted encoder*.\n"
        );
        let _ = writeln!(w, "| dataset | dictionary | names | steps | loss | names/s | wall time (s) |");
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|");
        for r in results {
            for a in &r.adaptations {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {:.4} | {:.1} | {:.0} |",
                    r.spec.name, a.dictionary, a.names, a.steps, a.loss, a.names_per_s, a.seconds
                );
            }
        }
    }

    let _ = writeln!(w, "\n## Normalization (gold mentions given)\n");
    let _ = writeln!(
        w,
        "Accuracy@k: the share of queries whose right concept is among BeLink's first k answers. \
         *classic*: composite mentions split into their parts, right when matching any gold id (BioSyn, SapBERT); \
         *strict*: no splitting, right only when the answer is exactly the gold concept (BELB). \
         In both, a concept's alternative ids count as the concept. Dictionary *ontology + training mentions*: \
         the training split's mentions added as user names (BioSyn's dictionary setting). \
         *lexical*: exact + trigram; *hybrid*: exact + trigram + dense (sentence encoder, HNSW), fused by \
         reciprocal rank with the ontology's weights (see above; *hybrid, equal weights*: all 1). Latency: one client, each mention a separate SQL call, wall time. Server peak MB: \
         peak resident memory of the model server.\n"
    );
    let _ = writeln!(
        w,
        "| dataset | dictionary | configuration | protocol | queries | acc@1 | acc@5 | acc@10 | mentions/s | p50 ms | p95 ms | server peak MB |"
    );
    let _ = writeln!(w, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in results.iter().flat_map(|r| &r.runs) {
        let (p50, p95) = percentiles(&run.latencies_ms);
        let total: f64 = run.latencies_ms.iter().sum::<f64>() / 1000.0;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {p50:.1} | {p95:.1} | {} |",
            run.dataset,
            run.dictionary,
            run.config,
            run.protocol.name(),
            run.queries,
            run.accuracy_at(1),
            run.accuracy_at(5),
            run.accuracy_at(10),
            run.queries as f64 / total.max(1e-9),
            run.server_peak_mb.map(|mb| format!("{mb:.0}")).unwrap_or_else(|| "-".into()),
        );
    }
    let _ = writeln!(
        w,
        "\nThe names *dense only (HNSW)* and *dense only (exact search)* find are compared in \
         [hnsw-recall.txt](hnsw-recall.txt) (`make eval`'s default datasets: recall of the \
         first 1, 10 and 50 names against exact search, by `hnsw.ef_search`, with the graph's build time).\n"
    );
    let _ = writeln!(w, "![accuracy@k](accuracy_at_k.png)\n\n![latency](latency.png)\n");

    // Read from the run that re-ranked every mention, ungated.
    let reranked: Vec<&NormalizationRun> = results
        .iter()
        .flat_map(|r| &r.runs)
        .filter(|r| r.config == UNGATED_RERANKING && !r.reranked.is_empty())
        .collect();
    if !reranked.is_empty() {
        let _ = writeln!(w, "### Re-ranker reliability (classic protocol)\n");
        let _ = writeln!(
            w,
            "The concepts the re-ranker chose (retrieval's unique exact matches never reach it; its \"none of \
             these\" answers left out), grouped by the probability it gave its choice: a calibrated re-ranker \
             is right about as often as it is confident. ECE: the gap between confidence and accuracy, \
             averaged over the choices.\n"
        );
        let _ = writeln!(w, "| dataset | dictionary | confidence | choices | mean confidence | accuracy |");
        let _ = writeln!(w, "|---|---|---|---:|---:|---:|");
        for run in reranked.iter().filter(|r| r.protocol == Protocol::Classic) {
            let choices: Vec<(f64, bool)> =
                run.reranked.iter().filter(|a| !a.nil).map(|a| (a.confidence, a.right)).collect();
            let reliability = Reliability::of(&choices);
            for bin in reliability.bins.iter().filter(|b| b.choices > 0) {
                let _ = writeln!(
                    w,
                    "| {} | {} | {:.1}–{:.1} | {} | {:.3} | {:.3} |",
                    run.dataset, run.dictionary, bin.from, bin.to, bin.choices, bin.mean_confidence, bin.accuracy
                );
            }
            let _ = writeln!(
                w,
                "| {} | {} | all (ECE {:.3}) | {} | {:.3} | {:.3} |",
                run.dataset,
                run.dictionary,
                reliability.expected_calibration_error,
                choices.len(),
                reliability.mean_confidence,
                reliability.accuracy
            );
        }
        let _ = writeln!(
            w,
            "\nIts \"none of these\" answers, with the probability it gave them: such an answer is right when \
             no right concept was among the candidates.\n"
        );
        let _ = writeln!(w, "| dataset | dictionary | \"none\" answers | mean probability | right |");
        let _ = writeln!(w, "|---|---|---:|---:|---:|");
        for run in reranked.iter().filter(|r| r.protocol == Protocol::Classic) {
            let nones: Vec<_> = run.reranked.iter().filter(|a| a.nil).collect();
            let n = nones.len().max(1) as f64;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.3} | {:.3} |",
                run.dataset,
                run.dictionary,
                nones.len(),
                nones.iter().map(|a| a.confidence).sum::<f64>() / n,
                nones.iter().filter(|a| !a.gold_retrieved).count() as f64 / n
            );
        }
        let _ = writeln!(
            w,
            "\n### Re-ranking gated by confidence (`belink.rerank_override_threshold`, `belink.rerank_none_threshold`)\n"
        );
        let _ = writeln!(
            w,
            "acc@1 when the re-ranker may overrule retrieval's decision with a concept only with at least \
             the probability of the column, and with \"none of these\" only with at least that of the row's \
             *none* gate (computed from the answers above: below it, retrieval's decision stands). \
             Both 0: the re-ranker always decides (the *hybrid + re-ranking* rows); both never: \
             retrieval alone.\n"
        );
        let header: Vec<String> = GATES.iter().map(|&t| gate_name(t)).collect();
        let _ = writeln!(w, "| dataset | dictionary | protocol | re-ranked | none | {} | never |", header.join(" | "));
        let _ = writeln!(w, "|---|---|---|---:|---:|{}---:|", "---:|".repeat(GATES.len()));
        for run in &reranked {
            for &none_gate in NONE_GATES {
                let cells: Vec<String> = GATES
                    .iter()
                    .chain([&f64::INFINITY])
                    .map(|&t| format!("{:.3}", gated_accuracy(run, Gates::ungated(t, none_gate))))
                    .collect();
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {} | {} |",
                    run.dataset,
                    run.dictionary,
                    run.protocol.name(),
                    run.reranked.len(),
                    gate_name(none_gate),
                    cells.join(" | ")
                );
            }
        }
        let defaults = Gates::defaults_with_margin(1.0);
        let _ = writeln!(
            w,
            "\n### Re-ranking only near ties (`belink.rerank_margin`)\n\n\
             The re-ranker is asked only about mentions whose first retrieved candidate is less than the \
             margin more similar to them than the second (1: every mention no unique exact match decides), \
             at the default gates (a concept overrules retrieval at {}, \"none of these\" at {}): acc@1, \
             and in brackets the mentions re-ranked. The *hybrid + re-ranking, defaults* rows above ran \
             at the default margin.\n",
            defaults.concept, defaults.none
        );
        let header: Vec<String> = MARGINS.iter().map(|m| format!("{m}")).collect();
        let _ = writeln!(w, "| dataset | dictionary | protocol | retrieval | {} |", header.join(" | "));
        let _ = writeln!(w, "|---|---|---|---:|{}", "---:|".repeat(MARGINS.len()));
        for run in &reranked {
            let cells: Vec<String> = MARGINS
                .iter()
                .map(|&margin| {
                    let gates = Gates::defaults_with_margin(margin);
                    let asked = run.reranked.iter().filter(|a| gates.asks(a)).count();
                    format!("{:.3} ({asked})", gated_accuracy(run, gates))
                })
                .collect();
            let retrieval = gated_accuracy(run, Gates::ungated(f64::INFINITY, f64::INFINITY));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {retrieval:.3} | {} |",
                run.dataset,
                run.dictionary,
                run.protocol.name(),
                cells.join(" | ")
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Published results (test sets)\n");
    let _ = writeln!(
        w,
        "Published accuracy@1 on the **test** sets. Our figures above are on the **development** sets \
         (the test sets are held out: we tune on train and dev only), so the comparison is indicative, not exact. \
         Each figure was checked against the source named (a repository's own results table, or its stored \
         predictions scored with its own evaluation script). Not included: SapBERT on BC5CDR-disease and \
         SapBERT 92.0 on NCBI-disease, for which no source could be checked.\n"
    );
    if PUBLISHED.is_empty() {
        let _ = writeln!(w, "(no verified published figures recorded)\n");
    } else {
        let _ = writeln!(w, "| system | dataset | protocol | acc@1 | source |");
        let _ = writeln!(w, "|---|---|---|---:|---|");
        for p in PUBLISHED {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.1} | {} |",
                p.system,
                p.dataset,
                p.protocol.name(),
                p.accuracy,
                p.source
            );
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## End-to-end linking (from raw text)\n");
    let _ = writeln!(
        w,
        "`belink_link(body, ontology)` over every document of the corpus (one SQL statement, \
         in one session whose mention dictionary was built before timing). A predicted entity is right when its span matches a gold mention's (*strict*: the same span; \
         *overlap*: overlapping spans) and its concept is one of that mention's gold concepts. \
         Precision over predicted entities, recall over gold mentions (NIL mentions left out). \
         *dictionary*: the ontology's names, or with the training split's mentions added as names \
         (`belink_add_names`), the setting of systems trained on that split (TaggerOne).\n"
    );
    let _ = writeln!(w, "| dataset | dictionary | configuration | {SCORE_HEADER} | documents/s |");
    let _ = writeln!(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in results.iter().flat_map(|r| &r.linking) {
        let scores = score_cells(&run.strict, &run.overlap);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {scores} | {:.1} |",
            run.dataset, run.dictionary, run.config, run.documents_per_second
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Mention detection (spans only)\n");
    let _ = writeln!(
        w,
        "Detection alone (`belink-eval detect`: the core's detection over the ontology file's \
         names, no cluster), by the mention dictionary alone and, where the dataset has one, with \
         the ontology's span scorer choosing among the dictionary's detections and the spans around \
         them; scored on every gold span, NIL ones included. *missed*: no \
         detection overlaps the gold mention; *other span*: detections overlap it but none has its \
         span; *false positives*: detections that overlap no gold mention. The spans are listed in \
         [errors.md](errors.md).\n"
    );
    let _ = writeln!(
        w,
        "| dataset | detection | {SCORE_HEADER} | missed | other span | false positives | documents/s | dictionary MB |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for result in results {
        for (label, run) in &result.detection {
            let _ = writeln!(
                w,
                "| {} | {label} | {} | {} | {} | {} | {:.0} | {:.1} |",
                result.spec.name,
                score_cells(&run.strict, &run.overlap),
                run.missed.len(),
                run.boundary.len(),
                run.spurious.len(),
                run.documents_per_second,
                run.dictionary_bytes as f64 / 1e6
            );
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "### Detection errors by cause\n");
    let _ = writeln!(
        w,
        "The errors of the table above, by class: missed mentions and false positives by their shape \
         (written in capitals: acronyms and gene symbols), other spans by how the detected span \
         differs (*wider*: it contains the gold span, a modifier or a neighbour taken in; \
         *narrower*: inside it, words of the mention left out; *crossing*: neither).\n"
    );
    let _ = writeln!(w, "| dataset | detection | {} |", crate::detection::CAUSES.join(" | "));
    let _ = writeln!(w, "|---|---|{}", "---:|".repeat(crate::detection::CAUSES.len()));
    for result in results {
        for (label, run) in &result.detection {
            let counts: Vec<String> = run.cause_counts().iter().map(usize::to_string).collect();
            let _ = writeln!(w, "| {} | {label} | {} |", result.spec.name, counts.join(" | "));
        }
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Errors by cause (classic protocol, top-1 wrong)\n");
    let _ = writeln!(w, "The mentions themselves are listed in [errors.md](errors.md).\n");
    let _ = writeln!(w, "| dataset | dictionary | configuration | errors | {} |", cause_labels().join(" | "));
    let _ = writeln!(w, "|---|---|---|---:|{}", "---:|".repeat(cause_labels().len()));
    for run in classic_runs(results) {
        let counts = cause_counts(run);
        let cells: Vec<String> = ALL_CAUSES.iter().map(|c| counts.get(c).copied().unwrap_or(0).to_string()).collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            run.dataset,
            run.dictionary,
            run.config,
            run.errors.len(),
            cells.join(" | ")
        );
    }
    out
}

const ALL_CAUSES: [ErrorCause; 4] =
    [ErrorCause::NotRetrieved, ErrorCause::RankedBelow, ErrorCause::RerankerWrong, ErrorCause::NilAnswer];

fn cause_labels() -> Vec<&'static str> {
    ALL_CAUSES.iter().map(|c| c.label()).collect()
}

fn cause_counts(run: &NormalizationRun) -> BTreeMap<ErrorCause, usize> {
    let mut counts = BTreeMap::new();
    for error in &run.errors {
        *counts.entry(error.cause).or_insert(0) += 1;
    }
    counts
}

fn classic_runs(results: &[DatasetResult]) -> impl Iterator<Item = &NormalizationRun> {
    results.iter().flat_map(|r| &r.runs).filter(|r| r.protocol == Protocol::Classic)
}

/// Every wrong classic-protocol answer, grouped by run and cause.
pub fn error_analysis(results: &[DatasetResult]) -> String {
    let mut out = String::from("# Errors\n\nWritten by `belink-eval evaluate`.\n\n# Mention detection\n");
    for result in results {
        for (label, run) in &result.detection {
            let _ = writeln!(out, "\n## {} · {label}\n\n{}", result.spec.name, run.errors());
        }
    }
    let _ = writeln!(out, "\n# Normalization errors (classic protocol)");
    for result in results {
        for run in result.runs.iter().filter(|r| r.protocol == Protocol::Classic) {
            let _ = writeln!(out, "\n## {} · {} · {}\n", run.dataset, run.dictionary, run.config);
            for cause in ALL_CAUSES {
                let errors: Vec<_> = run.errors.iter().filter(|e| e.cause == cause).collect();
                if errors.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "### {} ({})\n", cause.label(), errors.len());
                let _ = writeln!(out, "| document | mention | gold | BeLink's answer | gold rank |");
                let _ = writeln!(out, "|---|---|---|---|---:|");
                for e in errors {
                    let gold: Vec<String> = e
                        .query
                        .gold
                        .iter()
                        .map(|id| match result.concept_names.get(id) {
                            Some(name) => format!("{id} {name}"),
                            None => format!("{id} (not in the ontology)"),
                        })
                        .collect();
                    let answer =
                        e.predicted.as_ref().map(|(id, name)| format!("{id} {name}")).unwrap_or_else(|| "-".into());
                    let rank = e.gold_rank.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
                    let split = if e.query.from_composite { " (part of a composite)" } else { "" };
                    let _ = writeln!(
                        out,
                        "| {} | {}{split} | {} | {} | {rank} |",
                        e.document,
                        escape(&e.query.text),
                        escape(&gold.join("; ")),
                        escape(&answer)
                    );
                }
                let _ = writeln!(out);
            }
        }
    }
    out
}

/// The override thresholds the report compares (`belink.rerank_override_threshold`), and those
/// for "none of these" (`belink.rerank_none_threshold`); f64::INFINITY is "never", which the
/// setting's default 1 differs from only for a "none" given probability 1.
const GATES: &[f64] = &[0.0, 0.3, 0.5, 0.7, 0.9];
const NONE_GATES: &[f64] = &[0.0, 0.5, 0.9, f64::INFINITY];

/// Zero-shot against tuned re-ranking at each k (`belink-eval rerank-sweep`, eval/rerank-sweep.md).
pub fn rerank_sweep(info: &RunInfo, reranker: &RerankerChoice, sweep: &[SweepRun]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# {SWEEP_TITLE}\n");
    let _ =
        writeln!(w, "Written by `belink-eval rerank-sweep` on the cluster `make eval` left. Do not edit by hand.\n");
    let _ = writeln!(w, "- date: {}\n- commit: {}\n- command: `{}`", info.date, info.commit, info.command);
    let _ = writeln!(w, "- machine: {}\n- server: {}", info.machine, info.server);
    let _ = writeln!(w, "- re-ranker: {}\n", reranker.describe());
    let defaults = Gates::defaults_with_margin(belink_core::settings::Settings::default().rerank_margin);
    let _ = writeln!(
        w,
        "Gold mentions in their context (classic protocol), the ontology's names only, hybrid retrieval \
         of k candidates, the re-ranker asked at the default margin ({}): *zero-shot* is the re-ranker \
         as it is (`belink.reranker_adapter = 'none'`), *tuned* with its adapter. \
         *ungated*: the re-ranker decides every mention it is asked about; *default gates*: it \
         overrules retrieval with a concept at {} and with \"none of these\" at {}. *ms per re-ranked \
         mention*: mean wall time of the belink_normalize calls the re-ranker answered (one client, \
         one mention a call).\n",
        defaults.margin, defaults.concept, defaults.none
    );
    let _ = writeln!(
        w,
        "| dataset | model | k | mentions | re-ranked | retrieval acc@1 | ungated acc@1 | default gates acc@1 | ms per re-ranked mention |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in sweep {
        let run = &s.run;
        let reranked = run.reranked.len();
        let mean_ms = run.reranked.iter().map(|a| a.latency_ms).sum::<f64>() / reranked.max(1) as f64;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {reranked} | {:.3} | {:.3} | {:.3} | {mean_ms:.0} |",
            run.dataset,
            s.model,
            s.k,
            run.queries,
            gated_accuracy(run, Gates::ungated(f64::INFINITY, f64::INFINITY)),
            run.accuracy_at(1),
            gated_accuracy(run, defaults),
        );
    }
    out
}

/// The title of rerank-sweep.md and of the report's section that carries its table. The sweep
/// takes about as long again as the report (EVAL_RERANK_SWEEP=on), so the report carries the
/// last sweep's table with the sweep's own date and commit rather than measuring it every run.
const SWEEP_TITLE: &str = "Re-ranking: zero-shot against tuned, by k";
/// The section the sweep's section goes before when a report has none yet.
const PUBLISHED_HEADING: &str = "## Published results (test sets)";

/// `report` with its zero-shot-against-tuned section replaced by `sweep` (the text of
/// rerank-sweep.md; None: not measured yet).
pub fn with_sweep(report: &str, sweep: Option<&str>) -> String {
    let heading = format!("## {SWEEP_TITLE}");
    let mut section = format!("{heading}\n\n");
    match sweep {
        Some(sweep) => {
            section.push_str(
                "Copied from [rerank-sweep.md](rerank-sweep.md), written by `belink-eval rerank-sweep` \
                 (`make eval EVAL_RERANK_SWEEP=on`), with that run's date and commit:\n\n",
            );
            // The sweep's own title and "do not edit" line give way to the paragraph above.
            for line in sweep
                .lines()
                .skip_while(|line| line.starts_with("# ") || line.starts_with("Written by") || line.is_empty())
            {
                section.push_str(line);
                section.push('\n');
            }
            section.push('\n');
        }
        None => section
            .push_str("Not measured yet: `make eval EVAL_RERANK_SWEEP=on` measures it (about 35 minutes more).\n\n"),
    }
    // Where a heading's line starts (never the report's first line).
    let section_at = |heading: &str| report.find(&format!("\n{heading}\n")).map(|at| at + 1);
    match section_at(&heading) {
        Some(start) => {
            let rest = &report[start + heading.len()..];
            let end = rest.find("\n## ").map_or(report.len(), |at| start + heading.len() + at + 1);
            format!("{}{section}{}", &report[..start], &report[end..])
        }
        None => match section_at(PUBLISHED_HEADING) {
            Some(at) => format!("{}{section}{}", &report[..at], &report[at..]),
            None => format!("{report}\n{section}"),
        },
    }
}

/// The margins the report compares (`belink.rerank_margin`; 1: every mention re-ranked).
const MARGINS: &[f64] = &[0.02, 0.05, 0.1, 0.2, 1.0];

/// The gates a re-ranked run (ungated, every mention re-ranked) is read through: what the
/// re-ranker needs to overrule retrieval with a concept and with "none of these", and which
/// mentions it is asked about at all (when it agrees with retrieval, both are equally right).
#[derive(Debug, Clone, Copy)]
struct Gates {
    concept: f64,
    none: f64,
    margin: f64,
}

impl Gates {
    fn ungated(concept: f64, none: f64) -> Gates {
        Gates { concept, none, margin: 1.0 }
    }

    /// The extension's defaults, with another margin.
    fn defaults_with_margin(margin: f64) -> Gates {
        let settings = belink_core::settings::Settings::default();
        Gates { concept: settings.override_threshold, none: settings.none_override_threshold, margin }
    }

    fn asks(&self, answer: &RerankedAnswer) -> bool {
        near_tie(answer.similarities.0, answer.similarities.1, self.margin)
    }
}

/// acc@1 of a re-ranked run read through `gates`.
fn gated_accuracy(run: &NormalizationRun, gates: Gates) -> f64 {
    let reranker_hits = run.reranked.iter().filter(|a| a.right).count();
    let gated_hits = run
        .reranked
        .iter()
        .filter(|a| {
            let gate = if a.nil { gates.none } else { gates.concept };
            if !gates.asks(a) || a.confidence < gate {
                a.retrieval_right
            } else {
                a.right
            }
        })
        .count();
    (run.hits_at[0] - reranker_hits + gated_hits) as f64 / run.queries.max(1) as f64
}

fn gate_name(gate: f64) -> String {
    if gate.is_finite() {
        format!("{gate}")
    } else {
        "never".into()
    }
}

/// Confidence against accuracy, in bins of confidence 0.2 wide.
struct Reliability {
    bins: Vec<ReliabilityBin>,
    mean_confidence: f64,
    accuracy: f64,
    expected_calibration_error: f64,
}

struct ReliabilityBin {
    from: f64,
    to: f64,
    choices: usize,
    mean_confidence: f64,
    accuracy: f64,
}

impl Reliability {
    const BINS: usize = 5;

    /// From (confidence, right) pairs.
    fn of(choices: &[(f64, bool)]) -> Reliability {
        let summary = |group: &[&(f64, bool)]| {
            let n = group.len().max(1) as f64;
            (group.iter().map(|c| c.0).sum::<f64>() / n, group.iter().filter(|c| c.1).count() as f64 / n)
        };
        let width = 1.0 / Self::BINS as f64;
        let bins: Vec<ReliabilityBin> = (0..Self::BINS)
            .map(|i| {
                // The last bin includes a confidence of exactly 1.
                let group: Vec<&(f64, bool)> =
                    choices.iter().filter(|c| ((c.0 / width) as usize).min(Self::BINS - 1) == i).collect();
                let (mean_confidence, accuracy) = summary(&group);
                ReliabilityBin {
                    from: i as f64 * width,
                    to: (i + 1) as f64 * width,
                    choices: group.len(),
                    mean_confidence,
                    accuracy,
                }
            })
            .collect();
        let all: Vec<&(f64, bool)> = choices.iter().collect();
        let (mean_confidence, accuracy) = summary(&all);
        let expected_calibration_error = bins
            .iter()
            .map(|b| b.choices as f64 / all.len().max(1) as f64 * (b.mean_confidence - b.accuracy).abs())
            .sum();
        Reliability { bins, mean_confidence, accuracy, expected_calibration_error }
    }
}

/// A Markdown table cell's text: `|` would end the cell.
pub fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::{gated_accuracy, with_sweep, Gates, Reliability};
    use crate::evaluate::{NormalizationRun, RerankedAnswer, MAX_K};
    use crate::protocol::Protocol;

    /// A re-ranked run of `queries` mentions, `hits` right at k = 1, with these answers
    /// (confidence, "none of these", right, retrieval right), all near ties.
    fn reranked_run(queries: usize, hits: usize, answers: &[(f64, bool, bool, bool)]) -> NormalizationRun {
        let mut hits_at = vec![0; MAX_K];
        hits_at[0] = hits;
        NormalizationRun {
            dataset: "d".into(),
            dictionary: "ontology".into(),
            config: crate::configs::UNGATED_RERANKING.into(),
            protocol: Protocol::Classic,
            queries,
            hits_at,
            latencies_ms: vec![],
            server_peak_mb: None,
            errors: vec![],
            reranked: answers
                .iter()
                .map(|&(confidence, nil, right, retrieval_right)| RerankedAnswer {
                    confidence,
                    nil,
                    right,
                    retrieval_right,
                    gold_retrieved: true,
                    similarities: (0.8, 0.8),
                    latency_ms: 1.0,
                })
                .collect(),
        }
    }

    #[test]
    fn gating_keeps_retrieval_below_the_threshold() {
        // 4 right before re-ranking (exact matches) + 1 of the re-ranker's. Sure and right;
        // unsure and wrong where retrieval was right; unsure, both wrong.
        let run =
            reranked_run(10, 5, &[(0.9, false, true, false), (0.4, false, false, true), (0.2, false, false, false)]);
        assert_eq!(gated_accuracy(&run, Gates::ungated(0.0, 0.0)), 0.5);
        assert_eq!(gated_accuracy(&run, Gates::ungated(0.5, 0.0)), 0.6);
        assert_eq!(
            gated_accuracy(&run, Gates::ungated(f64::INFINITY, 0.0)),
            0.5,
            "retrieval alone: 4 + the one it had right"
        );
    }

    #[test]
    fn none_of_these_has_its_own_gate() {
        // The re-ranker's one right concept at 0.6; "none" at 0.7 and at 0.95 where retrieval
        // was right; a wrong concept at 0.6 where retrieval was right.
        let run = reranked_run(
            4,
            1,
            &[
                (0.6, false, true, false),
                (0.7, true, false, true),
                (0.95, true, false, true),
                (0.6, false, false, true),
            ],
        );
        assert_eq!(gated_accuracy(&run, Gates::ungated(0.0, 0.0)), 0.25);
        assert_eq!(gated_accuracy(&run, Gates::ungated(0.0, 0.9)), 0.5, "the unsure none leaves retrieval's concept");
        assert_eq!(gated_accuracy(&run, Gates::ungated(0.0, f64::INFINITY)), 0.75);
        assert_eq!(
            gated_accuracy(&run, Gates::ungated(0.7, f64::INFINITY)),
            0.75,
            "the right concept lost, the wrong one too"
        );
    }

    #[test]
    fn a_margin_leaves_the_clear_cases_to_retrieval() {
        // A sure right concept on a near tie (0.85 vs 0.84) where retrieval was wrong; a sure
        // wrong one on a clear case (0.95 vs 0.6) where retrieval was right.
        let mut run = reranked_run(2, 1, &[(0.9, false, true, false), (0.9, false, false, true)]);
        run.reranked[0].similarities = (0.85, 0.84);
        run.reranked[1].similarities = (0.95, 0.6);
        let with_margin = |margin| gated_accuracy(&run, Gates::defaults_with_margin(margin));
        assert_eq!(with_margin(1.0), 0.5, "both re-ranked");
        assert_eq!(with_margin(0.05), 1.0, "only the near tie re-ranked");
        assert_eq!(with_margin(0.005), 0.5, "neither");
        assert_eq!(with_margin(0.3), 1.0);
        assert_eq!(with_margin(0.4), 0.5, "the clear case re-ranked too");
    }

    #[test]
    fn reliability_bins_confidence_against_accuracy() {
        // Four choices at 0.9 (three right), two at 0.3 (none right), one at exactly 1 (right).
        let choices = [(0.9, true), (0.9, true), (0.9, true), (0.9, false), (0.3, false), (0.3, false), (1.0, true)];
        let reliability = Reliability::of(&choices);
        let counts: Vec<usize> = reliability.bins.iter().map(|b| b.choices).collect();
        assert_eq!(counts, [0, 2, 0, 0, 5]);
        let top = &reliability.bins[4];
        assert!((top.mean_confidence - 0.92).abs() < 1e-9 && (top.accuracy - 0.8).abs() < 1e-9);
        assert!((reliability.accuracy - 4.0 / 7.0).abs() < 1e-9);
        // ECE = 5/7 * |0.92 - 0.8| + 2/7 * |0.3 - 0|.
        assert!((reliability.expected_calibration_error - (5.0 / 7.0 * 0.12 + 2.0 / 7.0 * 0.3)).abs() < 1e-9);
        assert_eq!(Reliability::of(&[]).expected_calibration_error, 0.0);
    }

    const SWEEP: &str = "# Re-ranking: zero-shot against tuned, by k\n\nWritten by `belink-eval rerank-sweep`. Do not edit by hand.\n\n- date: D1\n\n| dataset | k |\n|---|---:|\n| ncbi | 10 |\n";
    const REPORT: &str =
        "# BeLink evaluation report\n\n## Normalization\n\ntable\n\n## Published results (test sets)\n\npublished\n";

    #[test]
    fn the_sweep_goes_before_the_published_results_with_its_own_date() {
        let report = with_sweep(REPORT, Some(SWEEP));
        let sweep_at = report.find("## Re-ranking: zero-shot against tuned, by k").unwrap();
        assert!(report.find("table").unwrap() < sweep_at);
        assert!(sweep_at < report.find("## Published results").unwrap());
        assert!(report.contains("- date: D1\n\n| dataset | k |\n|---|---:|\n| ncbi | 10 |\n"));
        assert!(!report.contains("Do not edit by hand"), "the sweep's own title and warning are left out");
        assert!(report.ends_with("published\n"));
    }

    #[test]
    fn a_newer_sweep_replaces_the_section_and_nothing_else() {
        let first = with_sweep(REPORT, Some(SWEEP));
        let second = with_sweep(&first, Some(&SWEEP.replace("D1", "D2").replace("| 10 |", "| 5 |")));
        assert!(second.contains("- date: D2") && second.contains("| ncbi | 5 |"));
        assert!(!second.contains("D1") && !second.contains("| ncbi | 10 |"));
        assert_eq!(second.matches("## Re-ranking: zero-shot").count(), 1);
        assert_eq!(second.replace("D2", "D1").replace("| 5 |", "| 10 |"), first);
    }

    #[test]
    fn without_a_sweep_the_report_says_how_to_measure_it() {
        let report = with_sweep(REPORT, None);
        assert!(report.contains("Not measured yet: `make eval EVAL_RERANK_SWEEP=on`"));
        assert_eq!(with_sweep(&report, None), report);
    }
}
