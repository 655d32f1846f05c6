export async function call(token: string) {
  const res = await fetch("https://backboard.railway.app/graphql/v2", {
    headers: { Authorization: `Bearer ${token}` },
  });
  return res.json();
}
const password = process.env.DB_PASSWORD;
const url = `postgres://app:${password}@db:5432/app`;
