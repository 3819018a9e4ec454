//! `POST /v1/chat/completions`.

use super::*;

pub(crate) async fn chat_completions(
    State(s): State<Shared>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let ChatRequest {
        params: p,
        messages,
        tools,
        prefix,
    } = ChatRequest::parse_as(&body_bytes(body)?, s.format)?;
    let format = s.format;
    if format == ChatFormat::Completion {
        return Err(bad(
            "this is a base or code model without a chat format: use /v1/completions",
        ));
    }
    if tools && !matches!(format, ChatFormat::Chatglm3 | ChatFormat::Glm4) {
        return Err(bad(format!(
            "tools: the model's prompt format ({}) has no tool protocol",
            format.as_str()
        )));
    }
    let p = params(&s, p);
    let (prompt_tokens, mut rx) = submit(&s, Prompt::Chat { messages, prefix }, &p).await?;
    let id = format!("chatcmpl-{}", random_hex(24));
    let created = now();
    if !p.stream {
        let Collected {
            text,
            stats,
            finish,
            logprobs,
        } = collect(&mut rx).await?;
        let (content, calls) = final_reply(&text, tools, format);
        let mut message = json!({"role": "assistant", "content": content});
        let mut reason = finish_name(finish);
        if !calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&calls, false);
            if content.is_empty() {
                message["content"] = Value::Null;
            }
            reason = "tool_calls";
        }
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": s.model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason,
                "logprobs": if p.logprobs.is_some() { json!({"content": logprobs}) } else { Value::Null }}],
            "usage": usage(prompt_tokens, &stats),
            "timings": timings(&stats),
        }))
        .into_response());
    }
    let chunk = {
        let id = id.clone();
        let model = s.model.clone();
        move |delta: Value, finish: Option<&str>| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            })
            .to_string()
        }
    };
    let mut out = VecDeque::new();
    out.push_back(chunk(json!({"role": "assistant", "content": ""}), None));
    let state = StreamState {
        rx,
        out,
        text: String::new(),
        sent: String::new(),
        done: false,
        call: None,
        logprobs: Vec::new(),
    };
    let model = s.model.clone();
    let (stops, include_usage) = (p.stops.clone(), p.include_usage);
    // log-probabilities ride on the next chunk that goes out
    let with_logprobs = |st: &mut StreamState, mut c: String| {
        if !st.logprobs.is_empty() {
            if let Ok(mut v) = serde_json::from_str::<Value>(&c) {
                v["choices"][0]["logprobs"] = json!({"content": std::mem::take(&mut st.logprobs)});
                c = v.to_string();
            }
        }
        st.out.push_back(c);
    };
    Ok(sse_stream(state, move |st, event| match event {
        Event::Logprob(v) => st.logprobs.push(v),
        Event::Piece(piece) => {
            st.text.push_str(&piece);
            let stable = stable_content(&st.text, tools, &stops);
            if let Some(delta) = stable.strip_prefix(st.sent.as_str()) {
                if !delta.is_empty() {
                    with_logprobs(st, chunk(json!({"content": delta}), None));
                    st.sent = stable.clone();
                }
            }
            // GLM-4 writes a call's arguments as JSON: its name, then the argument text, stream
            // as tool-call deltas (ChatGLM3's Python-style calls are converted at the end).
            if tools && format == ChatFormat::Glm4 {
                if let Some((name, args)) = streaming_call(&st.text, &stops) {
                    if st.call.is_none() {
                        let id = format!("call_{}", random_hex(12));
                        st.out.push_back(chunk(
                            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                                "function": {"name": name, "arguments": ""}}]}),
                            None,
                        ));
                        st.call = Some((id, 0));
                    }
                    if let Some((_, sent)) = &mut st.call {
                        if args.len() > *sent && args.is_char_boundary(*sent) {
                            st.out.push_back(chunk(
                                json!({"tool_calls": [{"index": 0,
                                    "function": {"arguments": &args[*sent..]}}]}),
                                None,
                            ));
                            *sent = args.len();
                        }
                    }
                }
            }
        }
        Event::Done {
            text,
            stats,
            finish,
        } => {
            let (content, calls) = final_reply(&text, tools, format);
            if let Some(delta) = content.strip_prefix(st.sent.as_str()) {
                if !delta.is_empty() {
                    st.out.push_back(chunk(json!({"content": delta}), None));
                }
            }
            let reason = match (&st.call, calls.first()) {
                (_, None) => {
                    if st.call.is_some() {
                        eprintln!(
                            "warning: a streamed GLM-4 tool call did not parse; sent as text"
                        );
                    }
                    finish_name(finish)
                }
                (Some((_, sent)), Some(first)) => {
                    // the first call streamed already: the rest of its arguments, then the others
                    let raw = first.raw.as_deref().unwrap_or_default();
                    if raw.len() > *sent && raw.is_char_boundary(*sent) {
                        st.out.push_back(chunk(
                            json!({"tool_calls": [{"index": 0,
                                "function": {"arguments": &raw[*sent..]}}]}),
                            None,
                        ));
                    }
                    let rest = tool_calls_json(&calls, true);
                    if let Some(more) = rest.as_array().filter(|a| a.len() > 1) {
                        st.out
                            .push_back(chunk(json!({"tool_calls": more[1..]}), None));
                    }
                    "tool_calls"
                }
                (None, Some(_)) => {
                    st.out.push_back(chunk(
                        json!({"tool_calls": tool_calls_json(&calls, true)}),
                        None,
                    ));
                    "tool_calls"
                }
            };
            with_logprobs(st, chunk(json!({}), Some(reason)));
            if include_usage {
                st.out.push_back(
                    json!({
                        "id": id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [],
                        "usage": usage(prompt_tokens, &stats),
                        "timings": timings(&stats),
                    })
                    .to_string(),
                );
            }
            st.out.push_back("[DONE]".into());
            st.done = true;
        }
        _ => {}
    }))
}
