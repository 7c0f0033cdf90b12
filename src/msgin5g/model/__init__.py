"""Transport-neutral vocabulary of msgin5g: messages, registrations, stored items."""
