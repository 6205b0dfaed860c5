//! `mops stores`: where a running server keeps job specs, provenance records and loss tables,
//! so a submitter writes its records where the services read them (URLs without credentials).

use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_proto::registry::v1 as pb;
use modelops_runtime::config::ClientConfig;

use crate::client::{self, status_error};
use crate::output::{self, Format, Table};

/// Asks the server for its stores and prints them.
pub async fn run(client_config: &ClientConfig, format: Format) -> anyhow::Result<()> {
    let mut registry = client::registry(client::connect(client_config).await?);
    let stores = registry.get_stores(pb::GetStoresRequest {}).await.map_err(status_error)?.into_inner();
    println!("{}", render(&stores, format));
    Ok(())
}

fn render(stores: &pb::GetStoresResponse, format: Format) -> String {
    let rows = [
        ("provenance", stores.provenance_url.as_str()),
        ("results", stores.results_url.as_str()),
        ("jobs", stores.jobs_url.as_str()),
        ("registry", stores.registry_store.as_str()),
    ];
    match format {
        Format::Json => {
            let mut object = PyObject::new();
            for (name, url) in rows {
                object.insert(name, url.into());
            }
            pyjson::to_canonical(&PyValue::Object(object))
        }
        Format::Csv => {
            let mut lines = vec![output::csv_record(&["store", "url"])];
            lines.extend(rows.iter().map(|(name, url)| output::csv_record(&[name, url])));
            lines.join("\n")
        }
        Format::Table => {
            let mut table = Table::new(["store", "url"]);
            for (name, url) in rows {
                table.row(vec![name.to_owned(), url.to_owned()]);
            }
            table.render()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_print_as_a_table_one_json_object_or_csv() {
        let stores = pb::GetStoresResponse {
            provenance_url: "file:///data/provenance".into(),
            results_url: "file:///data/results".into(),
            jobs_url: "az://jobs".into(),
            registry_store: "etcd://127.0.0.1:2379/modelops".into(),
        };
        let json = pyjson::parse(render(&stores, Format::Json).as_bytes()).unwrap();
        let json = json.as_object().unwrap();
        assert_eq!(json.get("provenance").and_then(PyValue::as_str), Some("file:///data/provenance"));
        assert_eq!(json.get("registry").and_then(PyValue::as_str), Some("etcd://127.0.0.1:2379/modelops"));
        let table = render(&stores, Format::Table);
        assert!(table.lines().any(|l| l.contains("jobs") && l.contains("az://jobs")), "{table}");
        let csv = render(&stores, Format::Csv);
        assert_eq!(csv.lines().take(2).collect::<Vec<_>>(), ["store,url", "provenance,file:///data/provenance"]);
        assert_eq!(csv.lines().count(), 5);
    }
}
