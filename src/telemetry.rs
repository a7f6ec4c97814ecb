//! Logging and traces: `tracing` to stderr, as text or JSON lines, filtered by `RUST_LOG`
//! (default: `info` for `serve`, `warn` for the one-shot commands). Text is coloured only on a
//! terminal and only while `NO_COLOR` is unset or empty, so a log written to a file or a pipe
//! holds no escape codes. With an OTLP endpoint (`serve --otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`), the server's own spans (`clerk_mirror` at `info`,
//! whatever `RUST_LOG` says) are also exported over OTLP/gRPC, through the tonic the server is
//! built with. What a span holds is what the log holds: ids, never emails, tokens or payloads.

use std::ffi::OsStr;
use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text for people (coloured on a terminal).
    Pretty,
    /// One JSON object a line, never coloured.
    Json,
}

/// What a command logs and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    pub format: Format,
    /// The `RUST_LOG` filter used when the variable is unset or empty.
    pub default_filter: &'static str,
}

impl Logging {
    /// A server's: its progress (`info`) in `format`.
    pub fn server(format: Format) -> Logging {
        Logging {
            format,
            default_filter: "info",
        }
    }

    /// A one-shot command's (`status`, `migrate`, …): its answer goes to stdout, and stderr
    /// shows only warnings and errors.
    pub fn command() -> Logging {
        Logging {
            format: Format::Pretty,
            default_filter: "warn",
        }
    }
}

/// Whether text logs are coloured: only on a terminal, and only while `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// `RUST_LOG` when set (and not empty) and valid, else `default`.
fn filter(default: &str) -> EnvFilter {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(text).unwrap_or_else(|_| EnvFilter::new(default)),
        _ => EnvFilter::new(default),
    }
}

/// Whether this process exports spans (set once, by [`install`]).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported: spans only a trace shows (never the log) are made only then, so
/// a server without `--otlp-endpoint` pays nothing for them.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The span `make` makes when spans are exported, else a disabled one (see [`exporting`]).
pub fn trace_only(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if exporting() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The W3C `traceparent` of the current span, when spans are exported and it is sampled (kept
/// with the inbox row, so the applier and the hub continue the webhook's trace).
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// The remote span context a `traceparent` names (`None`: not one).
fn parse_traceparent(text: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = text.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Links `span` to the span `traceparent` names (the SDK keeps a span's first 128 links).
pub fn link_to(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(context) = parse_traceparent(traceparent) {
        span.add_link(context);
    }
}

/// Makes the span `traceparent` names the parent of `span` (its trace continues there).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(context) = parse_traceparent(traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
    }
}

/// Installs the global subscriber once; later calls are ignored (tests call it many times).
pub fn init(logging: Logging) {
    let _ = install(logging, None);
}

/// Where traces go: an OTLP/gRPC collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traces {
    /// The collector's URL (`http://collector:4317`); `None`: the exporter reads
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
}

impl Traces {
    /// Traces for `flag` (the command line's `--otlp-endpoint`, which also reads
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), or for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; none when
    /// neither is set or `OTEL_SDK_DISABLED=true`.
    pub fn from_settings(flag: Option<&str>) -> Option<Traces> {
        Traces::from(flag, |name| std::env::var(name).ok())
    }

    /// As [`Traces::from_settings`], with the environment read through `env`.
    fn from(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<Traces> {
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return None;
        }
        match flag.filter(|f| !f.trim().is_empty()) {
            Some(url) => Some(Traces {
                endpoint: Some(url.trim().to_string()),
            }),
            None if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") => Some(Traces { endpoint: None }),
            None => None,
        }
    }
}

/// Exports spans until [`Exporting::shutdown`], which sends what is still buffered.
pub struct Exporting(SdkTracerProvider);

impl Exporting {
    /// Sends the spans still buffered (waiting at most a few seconds) and stops exporting.
    pub fn shutdown(self) {
        if let Err(e) = self.0.shutdown_with_timeout(std::time::Duration::from_secs(5)) {
            tracing::warn!(error = %e, "could not send the last spans to the OTLP collector");
        }
    }
}

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot export traces to `{endpoint}`: {source}; give --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) as a URL such as http://127.0.0.1:4317"
    )]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The layer that writes log lines to stderr in `format`.
fn log_lines<S>(format: Format) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        Format::Json => fmt.with_ansi(false).json().boxed(),
        Format::Pretty => {
            let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
            fmt.with_ansi(ansi).boxed()
        }
    }
}

/// Installs the global subscriber once, with `logging`, and, with `traces`, an OTLP exporter of
/// this process's spans (built on the current tokio runtime: call it inside one). Returns the
/// exporter, to shut down at exit.
pub fn install(logging: Logging, traces: Option<&Traces>) -> Result<Option<Exporting>, TelemetryError> {
    let env_filter = filter(logging.default_filter);
    let Some(traces) = traces else {
        let _ = tracing_subscriber::registry().with(env_filter).with(log_lines(logging.format)).try_init();
        return Ok(None);
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = &traces.endpoint {
        exporter = exporter.with_endpoint(endpoint.clone());
    }
    let exporter = exporter.build().map_err(|source| TelemetryError::Exporter {
        endpoint: traces.endpoint.clone().unwrap_or_else(|| "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into()),
        source,
    })?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name("clerk-mirror");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let exported = tracing_subscriber::filter::Targets::new().with_target("clerk_mirror", tracing::Level::INFO);
    // Each layer sees only what its own filter keeps, through `Only`, not tracing-subscriber's
    // per-layer filters: those drop events for good on a thread where one tracing call runs
    // inside another's (tokio-rs/tracing#2704), and with a target directive in RUST_LOG
    // (`info,clerk_mirror::applier=debug`) every line after startup went missing.
    let most = LevelFilter::max(env_filter.max_level_hint().unwrap_or(LevelFilter::TRACE), LevelFilter::INFO);
    let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer("clerk-mirror"));
    if tracing_subscriber::registry()
        .with(most)
        .with(Only::events(log_lines(logging.format), env_filter))
        .with(Only::spans_and_events(spans, exported))
        .try_init()
        .is_ok()
    {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Some(Exporting(provider)))
}

/// `layer`, seeing only the events `keep` enables, and either every span or only those `keep`
/// enables (with their records, entries, exits and closes); to the rest of the subscriber it
/// filters nothing.
struct Only<L, F> {
    layer: L,
    keep: F,
    every_span: bool,
}

impl<L, F> Only<L, F> {
    /// The log: its lines show the spans they happen in, so it sees every span (the fmt layer
    /// formats an event's whole scope).
    fn events(layer: L, keep: F) -> Only<L, F> {
        Only {
            layer,
            keep,
            every_span: true,
        }
    }

    /// The exported spans: only those `keep` enables.
    fn spans_and_events(layer: L, keep: F) -> Only<L, F> {
        Only {
            layer,
            keep,
            every_span: false,
        }
    }
}

impl<S, L, F> tracing_subscriber::Layer<S> for Only<L, F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: tracing_subscriber::Layer<S>,
    F: tracing_subscriber::Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.layer.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.layer.on_layer(subscriber);
    }

    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        // Both are told (a filter of span names, `[span]=debug`, learns the span's callsite
        // here); what they answer is left to `on_*`: the stack's filter is the level alone.
        let _ = self.keep.register_callsite(meta);
        let _ = self.layer.register_callsite(meta);
        tracing::subscriber::Interest::always()
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let kept = self.keep.enabled(attrs.metadata(), ctx.clone());
        if kept {
            self.keep.on_new_span(attrs, id, ctx.clone());
        }
        if kept || self.every_span {
            self.layer.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        let kept = self.kept(id, &ctx);
        if kept {
            self.keep.on_record(id, values, ctx.clone());
        }
        if kept || self.every_span {
            self.layer.on_record(id, values, ctx);
        }
    }

    fn on_follows_from(&self, id: &tracing::span::Id, follows: &tracing::span::Id, ctx: Context<'_, S>) {
        if self.every_span || (self.kept(id, &ctx) && self.kept(follows, &ctx)) {
            self.layer.on_follows_from(id, follows, ctx);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if self.keep.enabled(event.metadata(), ctx.clone()) {
            self.layer.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let kept = self.kept(id, &ctx);
        if kept {
            self.keep.on_enter(id, ctx.clone());
        }
        if kept || self.every_span {
            self.layer.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let kept = self.kept(id, &ctx);
        if kept {
            self.keep.on_exit(id, ctx.clone());
        }
        if kept || self.every_span {
            self.layer.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        let kept = self.kept(&id, &ctx);
        if kept {
            self.keep.on_close(id.clone(), ctx.clone());
        }
        if kept || self.every_span {
            self.layer.on_close(id, ctx);
        }
    }

    // What `Filtered` does: `OpenTelemetrySpanExt` (a span's context, links, parents) finds the
    // OpenTelemetry layer inside by its type.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const _ as *const ())
        } else if id == std::any::TypeId::of::<L>() {
            Some(&self.layer as *const _ as *const ())
        } else {
            // SAFETY: the inner layer answers for its own types, as `Filtered` lets it.
            unsafe { self.layer.downcast_raw(id) }
        }
    }
}

impl<L, F> Only<L, F> {
    /// Whether the span `id` is one `keep` enables (checked again from its metadata).
    fn kept<S>(&self, id: &tracing::span::Id, ctx: &Context<'_, S>) -> bool
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        F: tracing_subscriber::Layer<S>,
    {
        ctx.metadata(id)
            .is_some_and(|meta| self.keep.enabled(meta, ctx.clone()))
    }
}

/// For tests: the same subscriber, writing through libtest's capture (shown only on failure).
pub fn init_for_tests() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_given_and_otel_sdk_disabled_turns_them_off() {
        assert_eq!(Traces::from(None, env(&[])), None);
        assert_eq!(Traces::from(Some("  "), env(&[])), None);
        let flag = Some(Traces {
            endpoint: Some("http://collector:4317".into()),
        });
        assert_eq!(Traces::from(Some("http://collector:4317"), env(&[])), flag);
        assert_eq!(
            Traces::from(None, env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")])),
            Some(Traces { endpoint: None })
        );
        assert_eq!(
            Traces::from(Some("http://collector:4317"), env(&[("OTEL_SDK_DISABLED", "TRUE")])),
            None
        );
        assert_eq!(
            Traces::from(Some("http://collector:4317"), env(&[("OTEL_SDK_DISABLED", "false")])),
            flag
        );
    }

    #[test]
    fn text_logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a file or a pipe gets no escape codes");
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
