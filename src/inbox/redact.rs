//! What of a body the inbox keeps: every body as received, but for two kinds of event that carry
//! credentials. `email.*` and `sms.*` bodies (rendered messages with one-time codes and sign-in
//! links) are dropped; invitation bodies (`organizationInvitation.*`, `invitation.*`) are kept
//! with every `url` member removed at any depth (the acceptance URL carries a token). Either way
//! the row says `body_redacted`. Applied in the one INSERT, so webhooks, backfill pages,
//! reconcile repairs and replays alike never store a credential.

/// Whether bodies of `event_type` are dropped whole.
fn dropped(event_type: &str) -> bool {
    event_type.starts_with("email.") || event_type.starts_with("sms.")
}

/// Whether bodies of `event_type` are kept without their URLs.
fn without_urls(event_type: &str) -> bool {
    event_type.starts_with("organizationInvitation.") || event_type.starts_with("invitation.")
}

/// The body to store for an event of `event_type`, and whether it was redacted. An invitation
/// body keeps every byte but its `url` members; one that cannot be read as JSON is dropped whole
/// (what it holds cannot be told).
pub fn stored_body(event_type: Option<&str>, body: Option<&[u8]>) -> (Option<Vec<u8>>, bool) {
    let Some(body) = body else { return (None, true) };
    match event_type {
        Some(t) if dropped(t) => (None, true),
        Some(t) if without_urls(t) => (without_url_members(body), true),
        _ => (Some(body.to_vec()), false),
    }
}

/// `body` with every object member named `url` removed, at any depth; every other byte as it
/// was (numbers, escapes, duplicate keys and spacing included). `None` if it is not JSON.
fn without_url_members(body: &[u8]) -> Option<Vec<u8>> {
    let mut scan = Scan { b: body, i: 0 };
    let mut out = Vec::with_capacity(body.len());
    scan.space(&mut out);
    scan.value(&mut out, 0)?;
    scan.space(&mut out);
    let whole = scan.i == body.len() && serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok();
    whole.then_some(out)
}

/// Deeper than this is not a body Clerk sends (serde_json itself stops at 128).
const MAX_DEPTH: usize = 256;

/// A copying walk over JSON text.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Copies white space.
    fn space(&mut self, out: &mut Vec<u8>) {
        while let Some(c @ (b' ' | b'\t' | b'\n' | b'\r')) = self.peek() {
            out.push(c);
            self.i += 1;
        }
    }

    /// Copies one value, members named `url` left out of its objects.
    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(out, depth),
            b'[' => self.array(out, depth),
            b'"' => self.string(out).map(|_| ()),
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then(|| out.extend_from_slice(&self.b[start..self.i]))
            }
        }
    }

    /// Copies a string; returns its decoded text.
    fn string(&mut self, out: &mut Vec<u8>) -> Option<String> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => break,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        let raw = &self.b[start..self.i];
        out.extend_from_slice(raw);
        serde_json::from_slice(raw).ok()
    }

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        out.push(b'{');
        self.i += 1;
        let mut kept = 0;
        loop {
            let mut member = Vec::new();
            self.space(&mut member);
            if self.peek()? == b'}' && kept == 0 {
                out.extend_from_slice(&member);
                break;
            }
            let key = self.string(&mut member)?;
            self.space(&mut member);
            (self.peek()? == b':').then_some(())?;
            member.push(b':');
            self.i += 1;
            self.space(&mut member);
            self.value(&mut member, depth + 1)?;
            self.space(&mut member);
            if key != "url" {
                if kept > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&member);
                kept += 1;
            }
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => break,
                _ => return None,
            }
        }
        out.push(b'}');
        self.i += 1;
        Some(())
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        out.push(b'[');
        self.i += 1;
        self.space(out);
        if self.peek()? == b']' {
            out.push(b']');
            self.i += 1;
            return Some(());
        }
        loop {
            self.space(out);
            self.value(out, depth + 1)?;
            self.space(out);
            match self.peek()? {
                b',' => {
                    out.push(b',');
                    self.i += 1;
                }
                b']' => break,
                _ => return None,
            }
        }
        out.push(b']');
        self.i += 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_and_sms_bodies_are_dropped() {
        for t in ["email.created", "sms.created"] {
            assert_eq!(stored_body(Some(t), Some(b"{\"otp\":\"1\"}")), (None, true));
        }
    }

    #[test]
    fn invitation_bodies_lose_every_url_and_say_so() {
        let body = br#"{"type":"organizationInvitation.created","data":{"id":"orginv_1","url":"https://a/?token=t0k","data":{"url":"https://b/?ticket=t1k"},"public_organization_data":{"image_url":"https://img"}}}"#;
        for t in ["organizationInvitation.created", "invitation.created"] {
            let (kept, redacted) = stored_body(Some(t), Some(body));
            let kept = String::from_utf8(kept.unwrap()).unwrap();
            assert!(redacted);
            assert!(!kept.contains("t0k") && !kept.contains("t1k"), "{kept}");
            assert!(kept.contains("orginv_1") && kept.contains("https://img"), "{kept}");
        }
        assert_eq!(stored_body(Some("organizationInvitation.created"), Some(b"not json")), (None, true));
        assert_eq!(stored_body(Some("organizationInvitation.created"), Some(br#"{"url":"x""#)), (None, true));
    }

    #[test]
    fn an_invitation_body_keeps_every_other_byte_as_it_came() {
        let t = Some("organizationInvitation.created");
        let same = |b: &str| assert_eq!(stored_body(t, Some(b.as_bytes())), (Some(b.as_bytes().to_vec()), true), "{b}");
        same(r#"{"type":"organizationInvitation.created","data":{"n":-0.0,"big":123456789012345678901234567890}}"#);
        same(" [1, {\"a\" : \"\\\"url\\\"\"}, [], {}, \"\\u0000\", true, null] ");
        let cut = |b: &str, want: &str| {
            let (kept, _) = stored_body(t, Some(b.as_bytes()));
            assert_eq!(String::from_utf8(kept.unwrap()).unwrap(), want, "{b}");
        };
        cut(r#"{"url":"a","b":1}"#, r#"{"b":1}"#);
        cut(r#"{"b":1, "url":"a"}"#, r#"{"b":1}"#);
        cut(r#"{"url":"a"}"#, r#"{}"#);
        cut(r#"{"a":{"url":{"x":[1]}},"c":[{"url":1,"d":2}], "e": 1e400}"#, r#"{"a":{},"c":[{"d":2}], "e": 1e400}"#);
        // A key spelled with an escape is the same key.
        cut(r#"{"\u0075rl":"a","k":"url"}"#, r#"{"k":"url"}"#);
    }

    #[test]
    fn other_bodies_are_kept_byte_for_byte() {
        let body = br#"{"type":"user.created", "data": {"url": "kept"}}"#;
        assert_eq!(stored_body(Some("user.created"), Some(body)), (Some(body.to_vec()), false));
        assert_eq!(stored_body(None, Some(body)), (Some(body.to_vec()), false));
        assert_eq!(stored_body(Some("user.created"), None), (None, true));
    }
}
