//! `POST /v1/completions`.

use super::*;

pub(crate) async fn completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let CompletionRequest { params: p, prompt } = CompletionRequest::parse(&body_bytes(body)?)?;
    let p = params(&s, p);
    let output = OutputSpec {
        content: p.structured.as_ref().map(|s| s.grammar.clone()),
        ..Default::default()
    };
    let (prompt_tokens, _, mut rxs) = submit_choices(&s, Prompt::Raw(prompt), output, &p).await?;
    let id = format!("cmpl-{}", random_hex(24));
    let created = now();
    let model = s.model.clone();
    let response = move |choice: wire::CompletionChoice,
                         usage: Option<wire::Usage>,
                         timings: Option<wire::Timings>| wire::Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        choices: vec![choice],
        usage,
        timings,
    };
    let choice = |index: usize,
                  text: &str,
                  finish: Option<&'static str>,
                  lp: Option<wire::LegacyLogprobs>| {
        wire::CompletionChoice {
            index: index as _,
            text: text.to_string(),
            finish_reason: finish,
            logprobs: lp,
        }
    };
    if !p.stream {
        let (collected, stats) = collect_choices(&mut rxs).await?;
        let mut choices: Vec<_> = collected
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let lp = p
                    .logprobs
                    .map(|_| wire::LegacyLogprobs::from_entries(&c.logprobs, 0));
                choice(index, &c.text, Some(finish_name(c.finish)), lp)
            })
            .collect();
        let mut r = response(
            choices.remove(0),
            Some(usage(prompt_tokens, &stats)),
            Some(timings(&stats)),
        );
        r.choices.extend(choices);
        return Ok(Json(r).into_response());
    }
    let rx = rxs.remove(0); // streaming: n = 1
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
    // log-probabilities ride on the next chunk that goes out
    let pending = |st: &mut StreamState| {
        (!st.logprobs.is_empty()).then(|| {
            wire::LegacyLogprobs::from_entries(&std::mem::take(&mut st.logprobs), st.sent.len())
        })
    };
    Ok(sse_stream(state, move |st, event| match event {
        Event::Logprob(v) => st.logprobs.push(v),
        Event::Piece(piece) => {
            st.text.push_str(&piece);
            let end = safe_len(&st.text, &stops);
            if end > st.sent.len() {
                let lp = pending(st);
                let delta = &st.text[st.sent.len()..end];
                st.out
                    .push_back(to_json(&response(choice(0, delta, None, lp), None, None)));
                st.sent = st.text[..end].to_string();
            }
        }
        Event::Done {
            text,
            stats,
            finish,
        } => {
            let lp = pending(st);
            let delta = text.strip_prefix(st.sent.as_str()).unwrap_or("");
            let (u, t) = if include_usage {
                (Some(usage(prompt_tokens, &stats)), Some(timings(&stats)))
            } else {
                (None, None)
            };
            let last = response(choice(0, delta, Some(finish_name(finish)), lp), u, t);
            st.out.push_back(to_json(&last));
            st.out.push_back("[DONE]".into());
            st.done = true;
        }
        _ => {}
    }))
}
