"""Pure decisions about when jobs run: admission, backoff, circuit breakers, concurrency limits, rate limits."""
