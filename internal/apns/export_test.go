package apns

// Test helpers shared with the external tests (package apns_test).
var (
	BenchSend             = benchSend
	RealisticNotification = realisticNotification
)
