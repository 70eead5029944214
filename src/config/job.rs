//! One job of the config: its name and its sources' blocks.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::refuse::{NotSupported, ScrapeSetting};
use super::{ConsulSdConfig, DnsSdConfig, FileSdConfig, HttpSdConfig, SqlSdConfig};
use crate::targetgroup::TargetGroup;

/// One job: the sources whose groups are served together.
// `NotSupported`/`ScrapeSetting` fields are rejected while parsing and never
// hold a value.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The job's name, its URL path segment and its `__meta_sdbridge_job`.
    pub job_name: String,
    /// Prometheus's `static_configs`: served as given.
    #[serde(default, deserialize_with = "sections")]
    pub static_configs: Vec<TargetGroup>,
    /// Prometheus's `file_sd_configs`.
    #[serde(default, deserialize_with = "sections")]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Prometheus's `consul_sd_configs`.
    #[serde(default, deserialize_with = "sections")]
    pub consul_sd_configs: Vec<ConsulSdConfig>,
    /// Prometheus's `dns_sd_configs`.
    #[serde(default, deserialize_with = "sections")]
    pub dns_sd_configs: Vec<DnsSdConfig>,
    /// sdbridge's `sql_sd_configs`: targets from an inventory database.
    #[serde(default, deserialize_with = "sections")]
    pub sql_sd_configs: Vec<SqlSdConfig>,
    /// Prometheus's `http_sd_configs`: other HTTP SD servers, cached.
    #[serde(default, deserialize_with = "sections")]
    pub http_sd_configs: Vec<HttpSdConfig>,

    /// Prometheus's `relabel_configs`, checked as Prometheus 2.42 checks
    /// them (regexes compiled here). Not run yet: [`super::Config::parse`]
    /// refuses a non-empty list, so rules are never silently ignored.
    #[serde(default, deserialize_with = "crate::relabel::deserialize_rules")]
    pub relabel_configs: Vec<crate::relabel::Rule>,

    // Prometheus service discovery mechanisms sdbridge does not bridge (yet):
    // named so that pasting them gives "not supported", not "unknown field".
    #[serde(default)]
    azure_sd_configs: Option<NotSupported>,
    #[serde(default)]
    digitalocean_sd_configs: Option<NotSupported>,
    #[serde(default)]
    docker_sd_configs: Option<NotSupported>,
    #[serde(default)]
    dockerswarm_sd_configs: Option<NotSupported>,
    #[serde(default)]
    ec2_sd_configs: Option<NotSupported>,
    #[serde(default)]
    eureka_sd_configs: Option<NotSupported>,
    #[serde(default)]
    gce_sd_configs: Option<NotSupported>,
    #[serde(default)]
    hetzner_sd_configs: Option<NotSupported>,
    #[serde(default)]
    kubernetes_sd_configs: Option<NotSupported>,
    #[serde(default)]
    marathon_sd_configs: Option<NotSupported>,
    #[serde(default)]
    nomad_sd_configs: Option<NotSupported>,
    #[serde(default)]
    openstack_sd_configs: Option<NotSupported>,
    #[serde(default)]
    puppetdb_sd_configs: Option<NotSupported>,

    // Scrape settings: they stay in prometheus.yml.
    #[serde(default)]
    scrape_interval: Option<ScrapeSetting>,
    #[serde(default)]
    scrape_timeout: Option<ScrapeSetting>,
    #[serde(default)]
    metrics_path: Option<ScrapeSetting>,
    #[serde(default)]
    scheme: Option<ScrapeSetting>,
    #[serde(default)]
    params: Option<ScrapeSetting>,
    #[serde(default)]
    honor_labels: Option<ScrapeSetting>,
    #[serde(default)]
    honor_timestamps: Option<ScrapeSetting>,
    #[serde(default)]
    metric_relabel_configs: Option<ScrapeSetting>,
    #[serde(default)]
    basic_auth: Option<ScrapeSetting>,
    #[serde(default)]
    authorization: Option<ScrapeSetting>,
    #[serde(default)]
    tls_config: Option<ScrapeSetting>,
    #[serde(default)]
    sample_limit: Option<ScrapeSetting>,
}

/// A job's block list, whose `null` items Prometheus refuses ("empty or
/// null section in static_configs"); refused inside the parser, so the
/// error names the item.
fn sections<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Section<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Section<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct SectionVisitor<T>(std::marker::PhantomData<T>);

            impl<'de, T: Deserialize<'de>> de::Visitor<'de> for SectionVisitor<T> {
                type Value = Section<T>;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a section")
                }

                fn visit_none<E: de::Error>(self) -> Result<Section<T>, E> {
                    Err(E::custom("empty or null section"))
                }

                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Section<T>, D::Error> {
                    T::deserialize(d).map(Section)
                }
            }

            d.deserialize_option(SectionVisitor(std::marker::PhantomData))
        }
    }

    let sections = Vec::<Section<T>>::deserialize(d)?;
    Ok(sections.into_iter().map(|s| s.0).collect())
}

impl fmt::Display for JobConfig {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.job_name)
    }
}
