// The page tests/integration/api/test_client.py renders in Chromium against a live API: it
// uses the generated types and the Feed client as an application would, and writes what it
// received into the DOM for the test to read.
import { Feed, type ActiveCount, type ActivityList, type FeedEventOf } from "../src/index.js";

const events = document.getElementById("events") as HTMLOListElement;
const state = document.getElementById("state") as HTMLElement;

function show(id: string, text: string): void {
  const item = document.createElement("li");
  item.dataset.id = id;
  item.textContent = text;
  events.append(item);
}

const feed = new Feed("/api/events", {
  retryDelay: 200,
  onOpen: () => (state.textContent = "live"),
  onError: () => (state.textContent = "down"),
});
feed.on("task.progress", (event: FeedEventOf<"task.progress">) => {
  show(event.id, `${event.type} ${event.agent_id} ${event.percentage ?? "-"}`);
});
feed.on("task.completed", (event: FeedEventOf<"task.completed">) => {
  show(event.id, `${event.type} ${event.agent_id} ${event.status ?? "-"}`);
});

async function refresh(): Promise<void> {
  const list: ActivityList = await (await fetch("/api/agents/activity?page_size=100")).json();
  const count: ActiveCount = await (await fetch("/api/agents/active/count")).json();
  const complete = list.items.filter((item) => item.status === "complete");
  const percentages = complete.map((item) => item.percentage);
  const listElement = document.getElementById("list") as HTMLElement;
  listElement.textContent = `${list.total} ${list.total_pages} ${count.count} ${percentages.join(",")}`;
}

(document.getElementById("refresh") as HTMLButtonElement).onclick = () => void refresh();
