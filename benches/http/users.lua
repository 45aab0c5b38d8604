-- OFREP request bodies for 1,000 rotating users, for single and bulk evaluation alike.
local bodies, i = {}, 0

function init(args)
  for n = 0, 999 do
    local country = (n % 2 == 0) and "SE" or "NO"
    bodies[n + 1] = string.format(
      '{"context":{"targetingKey":"user-%08d@example.com","country":"%s","plan":"pro","appVersion":"3.14.1"}}',
      n, country)
  end
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", nil, nil, bodies[i])
end
