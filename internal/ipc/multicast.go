package ipc

// MaxMulticastTokens is the most tokens one multicast line may carry.
const MaxMulticastTokens = 1000

// TokenResult is one token's entry in a multicast answer: APNs' answer
// (Status, Reason, ApnsID, Timestamp) or apnsd's refusal (Error, Message,
// Retryable), exactly as a single send would have been answered.
type TokenResult struct {
	// Token is the cleaned token, or the string as given when it is
	// malformed (Error is then invalid_token).
	Token     string `json:"token"`
	OK        bool   `json:"ok"`
	Status    int    `json:"status,omitempty"`
	Reason    string `json:"reason,omitempty"`
	ApnsID    string `json:"apns_id,omitempty"`
	Timestamp int64  `json:"timestamp,omitempty"`
	// Queued is set for a token accepted by a "wait":false multicast.
	Queued    bool   `json:"queued,omitempty"`
	Error     string `json:"error,omitempty"`
	Message   string `json:"message,omitempty"`
	Retryable *bool  `json:"retryable,omitempty"`
}

// TokenResultFrom makes a multicast entry for token from the answer a
// single send would have got.
func TokenResultFrom(token string, r *Response) TokenResult {
	return TokenResult{
		Token: token, OK: r.OK, Status: r.Status, Reason: r.Reason, ApnsID: r.ApnsID,
		Timestamp: r.Timestamp, Error: r.Error, Message: r.Message, Retryable: r.Retryable,
	}
}

// MulticastReport is the body of a multicast answer: the counts and one
// entry per token, in the order of the request's tokens.
type MulticastReport struct {
	Sent    int           `json:"sent"`
	Failed  int           `json:"failed"`
	Results []TokenResult `json:"results"`
}

// checkTargets checks that a send names exactly one kind of target (token,
// tokens or channel_id) and that tokens has 1 to MaxMulticastTokens entries.
func (r *Request) checkTargets() *Error {
	n := 0
	for _, set := range []bool{r.Token != "", r.Tokens != nil, r.ChannelID != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return Errorf(CodeBadRequest, "give one of \"token\", \"tokens\" (multicast) and \"channel_id\" (broadcast), not several")
	}
	if r.Tokens != nil {
		if len(r.Tokens) == 0 || len(r.Tokens) > MaxMulticastTokens {
			return Errorf(CodeBadRequest, "\"tokens\" must have 1 to %d entries, got %d (split longer lists into several requests)", MaxMulticastTokens, len(r.Tokens))
		}
		if r.ApnsID != "" {
			return Errorf(CodeBadRequest, "\"apns_id\" cannot be given with \"tokens\": each notification of a multicast gets its own apns-id")
		}
	}
	return nil
}

// cleanTokens cleans each token; a malformed one keeps its string and gets
// an invalid_token refusal at its index (errs is nil when all are good).
func cleanTokens(in []string) (tokens []string, errs []*Error) {
	tokens = make([]string, len(in))
	for i, raw := range in {
		t, err := CleanToken(raw)
		if err != nil {
			if errs == nil {
				errs = make([]*Error, len(in))
			}
			tokens[i] = raw
			errs[i] = Errorf(CodeInvalidToken, "tokens[%d]: %v", i, err)
			continue
		}
		tokens[i] = t
	}
	return tokens, errs
}
