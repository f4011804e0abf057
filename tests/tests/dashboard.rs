//! The Grafana dashboard shipped in deploy/ (components/grafana-dashboard/celeriac.json): every
//! panel query, evaluated by a real Prometheus scraping a real celeriac worker after tasks ran,
//! returns a non-empty result.

mod support;

use std::time::{Duration, Instant};

use celeriac_testkit::workspace_root;
use serde_json::Value;
use support::scrape::{metrics_port, Prometheus};
use support::{eventually, World};

/// Every `targets[].expr` of the dashboard's panels (rows' nested panels included), with its
/// panel title.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has a PromQL expr");
                out.push((title.to_string(), expr.to_string()));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A query variable of the dashboard: its name, the value its "All" stands for, and the
/// `metric, label` of its `label_values(metric, label)`.
struct Variable {
    name: String,
    all_value: String,
    label_values: String,
}

fn query_variables(dashboard: &Value) -> Vec<Variable> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| Variable {
            name: v["name"].as_str().expect("a name").to_string(),
            all_value: v["allValue"].as_str().expect("an allValue").to_string(),
            label_values: v["definition"]
                .as_str()
                .and_then(|d| d.strip_prefix("label_values(")?.strip_suffix(')'))
                .expect("a label_values(metric, label) definition")
                .to_string(),
        })
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_from_a_worker() {
    let path = workspace_root().join("deploy/components/grafana-dashboard/celeriac.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard")).unwrap();
    let variables = query_variables(&dashboard);
    assert!(!variables.is_empty(), "the dashboard filters by job");
    // Each query as Grafana sends it with every variable at "All".
    let queries: Vec<(String, String)> = queries(&dashboard)
        .into_iter()
        .map(|(title, expr)| {
            let expr = variables.iter().fold(expr, |e, v| {
                e.replace(&format!("${}", v.name), &v.all_value)
            });
            (title, expr)
        })
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, expr) in &queries {
        assert!(!expr.contains('$'), "a variable left in {title}: {expr}");
    }

    let world = World::new(&[]);
    let w = world.celeriac("w1", &["-c", "2", "--acks-late", "--metrics-port", "0"]);
    let prom = Prometheus::start(metrics_port(&w));
    let out = world.py(r#"
from celery_app import app
rs = [app.send_task("t.add", args=(i, i)) for i in range(5)]
rs += [app.send_task("t.fail", args=("bad",)) for _ in range(2)]
rs.append(app.send_task("t.flaky", args=(1,)))
print(sum(r.get(timeout=60, propagate=False) is not None for r in rs))
"#);
    assert_eq!(out.trim(), "8", "{}", w.log());

    // Each variable's `label_values(metric, label)` lists the scrape job.
    for v in &variables {
        let (metric, label) = v
            .label_values
            .split_once(',')
            .unwrap_or_else(|| panic!("label_values(metric, label): {}", v.label_values));
        let expr = format!("count by ({}) ({metric})", label.trim());
        let listed = eventually(Duration::from_secs(60), || {
            let answer = prom.query(&expr)?;
            let values: Vec<String> = answer["data"]["result"]
                .as_array()?
                .iter()
                .filter_map(|r| Some(r["metric"][label.trim()].as_str()?.to_string()))
                .collect();
            values.contains(&"celeriac".to_string()).then_some(values)
        });
        assert!(listed.is_some(), "${} lists the job: {expr}", v.name);
    }

    // Rates need two scrapes after the counters appeared; Prometheus scrapes every second.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty: Vec<(String, String, Option<Value>)>;
    loop {
        empty = queries
            .iter()
            .filter_map(|(title, expr)| {
                let answer = prom.query(expr);
                let results = answer
                    .as_ref()
                    .and_then(|a| a["data"]["result"].as_array())
                    .map_or(0, Vec::len);
                (results == 0).then(|| (title.clone(), expr.clone(), answer))
            })
            .collect();
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{empty:#?}\nprometheus log:\n{}",
        prom.log()
    );
}
