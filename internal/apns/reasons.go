package apns

// Reason is the "reason" string APNs returns in the JSON body of an error
// response (and in a GOAWAY frame's debug data).
type Reason = string

// Every reason Apple documents in "Handling notification responses from APNs".
const (
	// 400
	ReasonBadCollapseID          Reason = "BadCollapseId"
	ReasonBadDeviceToken         Reason = "BadDeviceToken"
	ReasonBadExpirationDate      Reason = "BadExpirationDate"
	ReasonBadMessageID           Reason = "BadMessageId"
	ReasonBadPriority            Reason = "BadPriority"
	ReasonBadTopic               Reason = "BadTopic"
	ReasonDeviceTokenNotForTopic Reason = "DeviceTokenNotForTopic"
	ReasonDuplicateHeaders       Reason = "DuplicateHeaders"
	ReasonIdleTimeout            Reason = "IdleTimeout"
	ReasonInvalidPushType        Reason = "InvalidPushType"
	ReasonMissingDeviceToken     Reason = "MissingDeviceToken"
	ReasonMissingTopic           Reason = "MissingTopic"
	ReasonPayloadEmpty           Reason = "PayloadEmpty"
	ReasonTopicDisallowed        Reason = "TopicDisallowed"
	// 403
	ReasonBadCertificate            Reason = "BadCertificate"
	ReasonBadCertificateEnvironment Reason = "BadCertificateEnvironment"
	ReasonExpiredProviderToken      Reason = "ExpiredProviderToken"
	ReasonForbidden                 Reason = "Forbidden"
	ReasonInvalidProviderToken      Reason = "InvalidProviderToken"
	ReasonMissingProviderToken      Reason = "MissingProviderToken"
	ReasonUnrelatedKeyIDInToken     Reason = "UnrelatedKeyIdInToken"
	// 404
	ReasonBadPath Reason = "BadPath"
	// 405
	ReasonMethodNotAllowed Reason = "MethodNotAllowed"
	// 410
	ReasonExpiredToken Reason = "ExpiredToken"
	ReasonUnregistered Reason = "Unregistered"
	// 413
	ReasonPayloadTooLarge Reason = "PayloadTooLarge"
	// 429
	ReasonTooManyProviderTokenUpdates Reason = "TooManyProviderTokenUpdates"
	ReasonTooManyRequests             Reason = "TooManyRequests"
	// 500
	ReasonInternalServerError Reason = "InternalServerError"
	// 503
	ReasonServiceUnavailable Reason = "ServiceUnavailable"
	ReasonShutdown           Reason = "Shutdown"
)

// ReasonStatus maps each documented reason to the HTTP status APNs sends it with.
var ReasonStatus = map[Reason]int{
	ReasonBadCollapseID: 400, ReasonBadDeviceToken: 400, ReasonBadExpirationDate: 400,
	ReasonBadMessageID: 400, ReasonBadPriority: 400, ReasonBadTopic: 400,
	ReasonDeviceTokenNotForTopic: 400, ReasonDuplicateHeaders: 400, ReasonIdleTimeout: 400,
	ReasonInvalidPushType: 400, ReasonMissingDeviceToken: 400, ReasonMissingTopic: 400,
	ReasonPayloadEmpty: 400, ReasonTopicDisallowed: 400,
	ReasonBadCertificate: 403, ReasonBadCertificateEnvironment: 403, ReasonExpiredProviderToken: 403,
	ReasonForbidden: 403, ReasonInvalidProviderToken: 403, ReasonMissingProviderToken: 403,
	ReasonUnrelatedKeyIDInToken: 403,
	ReasonBadPath:               404,
	ReasonMethodNotAllowed:      405,
	ReasonExpiredToken:          410, ReasonUnregistered: 410,
	ReasonPayloadTooLarge:             413,
	ReasonTooManyProviderTokenUpdates: 429, ReasonTooManyRequests: 429,
	ReasonInternalServerError: 500,
	ReasonServiceUnavailable:  503, ReasonShutdown: 503,
}

// Retryable reports whether Apple's guidance allows sending the same
// notification again after this answer: server-side trouble (5xx) and
// TooManyRequests. Everything else describes the request, the token or the
// credentials and will fail the same way again.
func Retryable(status int, reason Reason) bool {
	switch {
	case status >= 500:
		return true
	case status == 429 && reason == ReasonTooManyRequests:
		return true
	}
	return false
}
