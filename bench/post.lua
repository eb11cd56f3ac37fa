local f = io.open(os.getenv("BODY"), "rb")
wrk.body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-protobuf"
