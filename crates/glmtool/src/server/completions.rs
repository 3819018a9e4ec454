//! `POST /v1/completions`.

use super::*;

pub(crate) async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let CompletionRequest { params: p, prompt } = CompletionRequest::parse(&body_bytes(body)?)?;
    let p = params(&s, p);
    let (prompt_tokens, mut rx) = submit(&s, Prompt::Raw(prompt), &p).await?;
    let id = format!("cmpl-{}", random_hex(24));
    let created = now();
    if !p.stream {
        let Collected {
            text,
            stats,
            finish,
            logprobs,
        } = collect(&mut rx).await?;
        let lp = match p.logprobs {
            Some(_) => legacy_logprobs(&logprobs, 0),
            None => Value::Null,
        };
        return Ok(Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": s.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish_name(finish), "logprobs": lp}],
            "usage": usage(prompt_tokens, &stats),
            "timings": timings(&stats),
        }))
        .into_response());
    }
    let model = s.model.clone();
    let stops = p.stops.clone();
    let include_usage = p.include_usage;
    let state = StreamState {
        rx,
        out: VecDeque::new(),
        text: String::new(),
        sent: String::new(),
        done: false,
        call: None,
        logprobs: Vec::new(),
    };
    let chunk = move |text: &str, finish: Option<&str>| {
        json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
        })
    };
    Ok(sse_stream(state, move |st, event| match event {
        Event::Logprob(v) => st.logprobs.push(v),
        Event::Piece(piece) => {
            st.text.push_str(&piece);
            let end = safe_len(&st.text, &stops);
            if end > st.sent.len() {
                let delta = &st.text[st.sent.len()..end];
                let mut c = chunk(delta, None);
                if !st.logprobs.is_empty() {
                    c["choices"][0]["logprobs"] =
                        legacy_logprobs(&std::mem::take(&mut st.logprobs), st.sent.len());
                }
                st.out.push_back(c.to_string());
                st.sent = st.text[..end].to_string();
            }
        }
        Event::Done {
            text,
            stats,
            finish,
        } => {
            let delta = text.strip_prefix(st.sent.as_str()).unwrap_or("");
            let mut last = chunk(delta, Some(finish_name(finish)));
            if !st.logprobs.is_empty() {
                last["choices"][0]["logprobs"] =
                    legacy_logprobs(&std::mem::take(&mut st.logprobs), st.sent.len());
            }
            if include_usage {
                last["usage"] = usage(prompt_tokens, &stats);
                last["timings"] = timings(&stats);
            }
            st.out.push_back(last.to_string());
            st.out.push_back("[DONE]".into());
            st.done = true;
        }
        _ => {}
    }))
}
