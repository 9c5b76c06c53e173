// The anthropic TypeScript SDK (from npm) streaming through the proxy; prints what it parsed.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, prompt, model] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey: "sk-ant-e2e-ts-client", maxRetries: 0 });
const events = [];
const stream = client.messages.stream({
  model,
  max_tokens: 200,
  messages: [{ role: "user", content: prompt }],
  tools: [{ name: "get_weather", description: "weather", input_schema: { type: "object", properties: { city: { type: "string" } } } }],
});
stream.on("streamEvent", (event) => events.push(event.type));
let text = "";
stream.on("text", (delta) => { text += delta; });
const message = await stream.finalMessage();
const counted = await client.messages.countTokens({ model, messages: [{ role: "user", content: prompt }] });
let error = null;
try {
  await client.messages.create({ model: "", max_tokens: 5, messages: [] });
} catch (err) {
  error = { status: err.status, type: err.error?.error?.type, name: err.constructor.name };
}
console.log(JSON.stringify({ events, text, message, counted, error }));
